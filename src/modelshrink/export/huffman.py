"""Canonical Huffman coding of bytes: moved to modelshrink.runtime.huffman (numpy only), importable from here."""

from modelshrink.runtime.huffman import huffman_decode, huffman_encode

__all__ = ["huffman_decode", "huffman_encode"]
