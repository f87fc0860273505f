"""The folder nnU-Net searches through `nnUNet_extTrainer` (see `nnunet_ext_env`); installed as
`nnunet_ext_trainers` so an installed copy can find it."""
