"""nnunet-ext: modality-robust training for nnU-Net v2 (gradual modality dropout, MultiUnet, ...).

`trainers/` and `plans/` keep their place in the repository layout and are installed as the packages
`nnunet_ext_trainers` and `nnunet_ext_plans`, so that an installed copy (editable or not) can point
nnU-Net's `nnUNet_extTrainer` at the trainer folder. Both only wrap the library: the plan templates and the
plan derivation live in `nnunet_ext.planning` (templates in nnunet_ext/planning/templates).
"""
from setuptools import find_packages, setup

setup(
    name="nnunet-ext",
    version="0.1.0",
    description="nnU-Net v2 extension for multi-center stroke MRI with missing modalities",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_ext", "nnunet_ext.*"]) + ["nnunet_ext_trainers", "nnunet_ext_plans"],
    package_dir={"nnunet_ext_trainers": "trainers", "nnunet_ext_plans": "plans"},
    package_data={"nnunet_ext.planning": ["templates/*.json"]},
    install_requires=[
        "nnunetv2>=2.8,<2.9",  # nnUNet_extTrainer discovery appeared in 2.8.0
        "torch>=2.1.2,!=2.9.*,<=2.14.1",
        "SimpleITK>=2.2,<3",
        "nibabel>=4,<6",  # raw NIfTI voxels (NaN/Inf checks SimpleITK cannot see)
        "batchgenerators>=0.25,<0.26",
        "batchgeneratorsv2>=0.3,<0.4",
        "acvl_utils>=0.2,<0.3",
        "numpy>=1.24,<3",
        "scipy>=1.10,<2",
        "connected-components-3d>=3.12,<5",
        "matplotlib>=3.7,<4",
        "submitit>=1.5,<2",  # cluster (SLURM) and local job executors for the harnesses
    ],
    extras_require={"test": ["pytest>=7,<10"]},
    entry_points={
        "console_scripts": [
            "nnunet_ext_env=nnunet_ext.cli.env:main",
            "nnunet_ext_generate_cohort=nnunet_ext.cli.generate_cohort:main",
            "nnunet_ext_plan_cpu=nnunet_ext_plans.cpu_plans:main",
            "nnunet_ext_plan_upattllstm=nnunet_ext_plans.upattllstm_plans:main",
            "nnunet_ext_predict=nnunet_ext.cli.predict_missing:main",
            "nnunet_ext_demo=nnunet_ext.cli.demo:main",
            "nnunet_ext_reproduce=nnunet_ext.cli.reproduce:main",
            "nnunet_ext_reproduce_clot=nnunet_ext.cli.reproduce_clot:main",
            "nnunet_ext_robustness=nnunet_ext.cli.robustness:main",
            "nnunet_ext_postprocess=nnunet_ext.cli.postprocess:main",
            "nnunet_ext_evaluate=nnunet_ext.cli.evaluate:main",
            "nnunet_ext_convert=nnunet_ext.cli.convert:main",
            "nnunet_ext_splits=nnunet_ext.cli.splits:main",
        ]
    },
)
