"""Weight formats as adapters outside the modules: Hugging Face directories (config.json, safetensors, the
HF <-> lmforge name maps per family), GGUF reading and its quantized blocks, and `load`, which picks one by path."""
