"""Text backends: transformers causal LMs (causal_lm.py), the decoding loop and its sampling, and the
packed CPU path (quantize.py, packed_llama.py, llama_layer.py, row_attention.py)."""
