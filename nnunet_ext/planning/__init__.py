"""Plans for our configurations, derived from nnU-Net's own: size templates, CPU plans, clot-network plans.

The command-line tools `nnunet_ext_plan_cpu` / `nnunet_ext_plan_upattllstm` (`plans/`, installed as
`nnunet_ext_plans`) are thin wrappers around these modules; the library never imports them.
"""
