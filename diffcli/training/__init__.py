"""Training recipes: how every model that ships in the package was made, and the `diffcli distill` loop.

The runtime never imports this package (tests/test_architecture.py checks it, imports inside functions
included); its one door is `diffcli distill`, whose runner (diffcli.distill.runner) starts
`distill.trainer`. Recipes use the runtime freely (loading, the bundled scenes and architectures).
Each recipe is a command: ``python -m diffcli.training.<recipe> --help``.

  common           shared helpers: rendered scene batches, step/time budget, LR schedule, thread
                   tuner, EMA, checkpoints, timestep sampling
  export           an fp16 StableDiffusionPipeline folder of trained components, swapped in whole
  bundled          the bundled model `tiny`: VAE, then text encoder + UNet, optional decoder fine-tune
  controlnet       the bundled ControlNet `tiny-control-seg` (object silhouette -> scene)
  edit             the bundled InstructPix2Pix model `tiny-edit` (scene + instruction -> edited scene)
  tiny_ae          the bundled model's tiny autoencoder `tiny-ae`
  latent_upscaler  an x2 latent upscaler for the bundled family (not trained yet)
  segmenter        the scene segmenter (`control preprocess --kind seg`, the ControlNet bench)
  evaluator        the attribute evaluator (the benches, distill reports)
  ship_student     a distilled student of the bundled model copied into the package as `tiny-lcm`
  distill/         the training half of `diffcli distill`
"""
