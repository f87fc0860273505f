"""`nnunet_ext_postprocess`: run a chain of clot post-processing steps over an nnU-Net prediction folder.

    nnunet_ext_postprocess -i PRED -o OUT --steps min_size:20 largest
    nnunet_ext_postprocess -i PRED -o OUT --steps min_size:20 lesion_distance:20 threshold:0.3 --lesions LESION_PRED

Steps run in the order given: min_size[:n_min] (20), largest, lesion_distance[:d] (20; --distance-units
voxels|mm), threshold[:th] (0.3; needs PRED/CASE.npz from `nnUNetv2_predict --save_probabilities`).
OUT is written as a new folder (all cases, or nothing on error); the input is never touched.
"""
import argparse
import sys

from nnunet_ext.postprocessing.clot import parse_step
from nnunet_ext.postprocessing.folders import postprocess_folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", dest="input", required=True)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("--steps", nargs="+", required=True)
    parser.add_argument("--lesions", help="folder of predicted lesion masks (same case names)")
    parser.add_argument("--label", type=int, default=1)
    parser.add_argument("--distance-units", choices=("voxels", "mm"), default="voxels")
    parser.add_argument("--file-ending", default=".nii.gz")
    args = parser.parse_args(argv)
    try:
        steps = [parse_step(s) for s in args.steps]
        count = postprocess_folder(args.input, args.output, steps, args.lesions, args.label, args.file_ending,
                                   args.distance_units, "nnunet_ext_postprocess " + " ".join(sys.argv[1:]))
    except (ValueError, FileExistsError, OSError) as error:
        sys.exit(f"error: {error}")
    print(f"post-processed {count} cases into {args.output}")


if __name__ == "__main__":
    main()
