"""Tensor operations of the clot networks' blocks: sliding maxima and the CPU fast paths of the recurrent cells."""
