"""Supervised fine-tuning on CPR records: data packing, parallelisation (FSDP2 / DeepSpeed), checkpoints, export."""
