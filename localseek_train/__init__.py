"""Training code for localseek-nano. Not part of the runtime package: needs the `[train]` extra (torch,
transformers, tokenizers, safetensors). Entry point: `python -m localseek_train.nano`."""
