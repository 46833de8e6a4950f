"""Vision modules (nn only, no I/O): ViT towers (vit.py), CLIP two-tower + losses (clip.py), the LLaVA projector
(projector.py), the BLIP-2 Q-Former (qformer.py), Qwen2-VL M-RoPE (mrope.py), gated cross-attention
(cross_attention.py). HF directories: lmforge.formats.hf_vision / hf_llava; images: lmforge.data.images."""
