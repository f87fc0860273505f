"""`nnunet_ext_env`: print the shell line that lets stock nnUNetv2_train / nnUNetv2_predict find our trainers.

Use:  eval "$(nnunet_ext_env)"
"""
import argparse
import os
import shlex

from nnunet_ext.paths import EXT_TRAINER_VAR, trainer_dir, with_trainer_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", action="store_true", help="print only the trainer folder")
    args = parser.parse_args()
    if args.dir:
        print(trainer_dir())
    else:
        print(f"export {EXT_TRAINER_VAR}={shlex.quote(with_trainer_dir(os.environ.get(EXT_TRAINER_VAR)))}")


if __name__ == "__main__":
    main()
