"""Plan templates and the tools that derive plans for our configurations (installed as `nnunet_ext_plans`)."""
