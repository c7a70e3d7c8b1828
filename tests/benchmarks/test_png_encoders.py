"""`python -m benchmarks.png_encoders` (docs/benchmarks.md, "PNG encoder") runs and compares like
with like: every encoder's file reads back to the same pixels. No timing is asserted here."""

from benchmarks.png_encoders import compare


def test_png_encoder_comparison_runs_on_tiny_images():
    for size in (16, 48):  # stored (one block) and compressed
        results = compare(size, 3)
        names = " ".join(results)
        assert "entgan" in names and "encode_png" in names and "PIL" in names
        for name, (micros, size_bytes) in results.items():
            assert micros > 0 and size_bytes > size * size * 3 * 0.05, (name, micros, size_bytes)
