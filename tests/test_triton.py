"""The Triton model repository: its config.pbtxt parses as Triton's ModelConfig and describes
the exported model, with the custom-op library and dynamic batching."""

from __future__ import annotations

import pytest
import torch

from fftconv_rt.cli import main
from fftconv_rt.export import export
from fftconv_rt.triton import write_triton_repository

from test_export import P1

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (Triton's ModelConfig schema) is not installed")
text_format = pytest.importorskip("google.protobuf.text_format")


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _dims(onnx_path, which):
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    value = (graph.input if which == "input" else graph.output)[0]
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "hyena_conv.onnx"
    export(P1().eval(), (torch.randn(2, 4, 64),), path)
    return path


def test_config_parses_as_triton_model_config(exported, tmp_path):
    config = _parse(write_triton_repository(exported, tmp_path / "repo"))
    assert config.name == "hyena_conv" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert list(config.model_operations.op_library_filename) == ["/models/hyena_conv/libfftconv_ort.so"]
    assert (tmp_path / "repo" / "hyena_conv" / "libfftconv_ort.so").is_file()
    assert (tmp_path / "repo" / "hyena_conv" / "1" / "model.onnx").is_file()
    [inp], [out] = config.input, config.output
    # (B, H, L) with B the batch: Triton lists the others, -1 where the model's size is dynamic
    assert inp.data_type == model_config_pb2.TYPE_FP32 and list(inp.dims) == _dims(exported, "input")[1:]
    assert out.data_type == model_config_pb2.TYPE_FP32 and list(out.dims) == _dims(exported, "output")[1:]
    assert list(inp.dims)[-1] == -1  # the sequence length stays dynamic
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_cli_without_batching_on_cpu(exported, tmp_path, capsys):
    assert main(["triton-repo", str(exported), str(tmp_path / "repo"), "--name", "conv", "--max-batch-size", "0",
                 "--cpu", "--library-path", "/opt/lib/libfftconv_ort.so"]) == 0
    config = _parse(tmp_path / "repo" / "conv" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == _dims(exported, "input")
    assert list(config.model_operations.op_library_filename) == ["/opt/lib/libfftconv_ort.so"]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert "tritonserver --model-repository" in capsys.readouterr().out


def test_static_batch_is_refused_for_batching(tmp_path):
    path = tmp_path / "static.onnx"
    export(P1().eval(), (torch.randn(2, 4, 64),), path, dynamic_shapes=(None,))
    with pytest.raises(ValueError, match="no dynamic first .batch. dimension"):
        write_triton_repository(path, tmp_path / "repo")
