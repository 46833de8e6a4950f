"""The model calculator behind `lmforge calc`: parameters, FLOPs and memory of a config, without building it."""
