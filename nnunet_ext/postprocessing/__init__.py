"""Post-processing of clot predictions (paper section 4.2.4): pure functions on arrays, and chains of them."""
from nnunet_ext.postprocessing.clot import (STEPS, apply_chain, grow_by_threshold, keep_closest_to_lesion,
                                            keep_largest_object, parse_step, remove_small_objects)
from nnunet_ext.postprocessing.folders import postprocess_folder

__all__ = ["STEPS", "apply_chain", "grow_by_threshold", "keep_closest_to_lesion", "keep_largest_object",
           "parse_step", "postprocess_folder", "remove_small_objects"]
