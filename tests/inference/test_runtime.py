"""Where exported graphs are cached: the key follows the checkpoints' bytes, their order and the
test-time setting, never their names."""

from braintumor.inference.runtime import onnx_cache_path


def test_the_cache_key_is_the_checkpoints_bytes_their_order_and_tta(tiny_checkpoint, tmp_path):
    from synthetic import perturbed_copy

    other = perturbed_copy(tiny_checkpoint, tmp_path / "other.safetensors")
    renamed = tmp_path / "renamed.safetensors"
    renamed.write_bytes(tiny_checkpoint.read_bytes())
    one = onnx_cache_path([tiny_checkpoint])
    assert onnx_cache_path([renamed]) == one and one.suffix == ".onnx"
    paths = {one, onnx_cache_path([tiny_checkpoint], tta=False), onnx_cache_path([tiny_checkpoint], tta=True),
             onnx_cache_path([other]), onnx_cache_path([tiny_checkpoint, other]), onnx_cache_path([other, tiny_checkpoint])}
    assert len(paths) == 6
