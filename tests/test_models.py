import pytest
import torch

import rtvos
from rtvos.models import (
    MATCHING_VARIANTS,
    CheckpointError,
    FCNResNet,
    RPMNet,
    RPMNetConfig,
    create_model,
    load_checkpoint,
    load_model,
    resize_flow,
    save_checkpoint,
    warp,
)
from rtvos.ops import DeformConv2d, deform_conv2d

STAGE_CH = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048], 101: [256, 512, 1024, 2048]}
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def test_registry_lists_all_depths():
    assert rtvos.list_models() == ["rpmnet_dis_r18_w50", "rpmnet_dis_r18_w50_cu", "rpmnet_r101", "rpmnet_r18",
                                   "rpmnet_r34", "rpmnet_r50"]
    from rtvos.models import model_name

    for name in rtvos.list_models():  # every registered variant round-trips through its config
        assert model_name(create_model(name).config) == name
    with pytest.raises(ValueError, match="unknown model 'rpmnet_r7'"):
        create_model("rpmnet_r7")
    with pytest.raises(ValueError, match="unknown matching variant 'bogus'"):
        create_model("rpmnet_r18", matching="bogus")


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("size", [512, 192])
def test_embedding_shapes_follow_layer_table(depth, size):
    net = FCNResNet(depth).eval()
    assert [len(s) for s in net.stages] == list(BLOCKS[depth])
    feats = {}
    hooks = [net.pool.register_forward_hook(lambda m, i, o: feats.__setitem__("pool", o.shape))]
    for k, stage in enumerate(net.stages):
        hooks.append(stage.register_forward_hook(lambda m, i, o, k=k: feats.__setitem__(k, o.shape)))
    with torch.no_grad():
        e = net(torch.rand(1, 3, size, size))
    for h in hooks:
        h.remove()
    assert feats["pool"] == (1, 32, size // 4, size // 4)
    for k in range(4):
        s = size // 2 ** (k + 3)
        assert feats[k] == (1, STAGE_CH[depth][k], s, s)  # every stage strided: S/8 … S/64
    assert e.shape == (1, 32, size // 4, size // 4)
    assert net.stem[0].kernel_size == (7, 7) and net.stem[0].out_channels == 32


def test_decoder_reads_widths_from_encoder():
    net = FCNResNet(50)
    assert [(u.in_channels, u.out_channels) for u in net.ups] == [(2048, 1024), (1024, 512), (512, 256), (256, 32)]
    assert all(u.stride == (2, 2) and u.kernel_size == (3, 3) for u in net.ups)


@pytest.mark.parametrize("variant", MATCHING_VARIANTS)
def test_matching_variants_produce_flow(variant):
    m = create_model("rpmnet_r18", matching=variant).eval()
    e = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        f = m.match(e, e.flip(0))
    assert f.shape == (2, 2, 16, 16)
    deform = [x for x in m.matching.modules() if isinstance(x, DeformConv2d)]
    assert len(deform) == (3 if variant == "deformable" else 0)
    convs = [x for x in m.matching.modules() if isinstance(x, torch.nn.Conv2d) and x not in
             [d.offset_conv for d in deform]]
    n_layers = {"conv1": 1, "conv5": 5}.get(variant, 3)
    assert len(deform) + len(convs) == n_layers
    if variant.startswith("dilated"):
        assert all(c.dilation == (int(variant[7:]),) * 2 for c in convs)


def test_deformable_matching_layer_table():
    m = create_model("rpmnet_r18")
    d1, d2, d3 = [x for x in m.matching.modules() if isinstance(x, DeformConv2d)]
    assert [(d.weight.shape[1], d.weight.shape[0]) for d in (d1, d2, d3)] == [(64, 32), (32, 16), (16, 2)]
    assert all(d.offset_conv.out_channels == 18 and d.offset_conv.kernel_size == (3, 3) for d in (d1, d2, d3))
    # BN+ReLU after D1 and D2, D3 linear.
    kinds = [type(x).__name__ for x in m.matching.layers]
    assert kinds == ["DeformConv2d", "BatchNorm2d", "ReLU", "DeformConv2d", "BatchNorm2d", "ReLU", "DeformConv2d"]


def test_warp_zero_flow_is_identity_and_integer_flow_shifts():
    x = torch.rand(2, 3, 10, 12)
    assert torch.allclose(warp(x, torch.zeros(2, 2, 10, 12)), x, atol=1e-6)  # grid normalisation rounds
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 2, -3  # sample from (y+2, x-3)
    y = warp(x, flow)
    assert torch.allclose(y[:, :, :8, 3:], x[:, :, 2:, :9], atol=1e-6)
    assert torch.all(y[:, :, 8:, :] == 0) and torch.all(y[:, :, :, :3] == 0)  # zero outside the image


def test_warp_equals_d4_deformable_conv_with_unit_weight():
    x = torch.rand(1, 4, 9, 11, dtype=torch.float64)
    flow = torch.randn(1, 2, 9, 11, dtype=torch.float64) * 2
    weight = torch.zeros(4, 4, 1, 1, dtype=torch.float64)
    weight[range(4), range(4)] = 1  # D4: per-channel weight 1, offsets = f4
    ref = deform_conv2d(x, flow, weight)
    assert torch.allclose(warp(x, flow), ref, atol=1e-10)


def test_resize_flow_scales_displacements():
    f = torch.ones(1, 2, 8, 8)
    f[:, 1] = 2
    g = resize_flow(f, (32, 16))
    assert g.shape == (1, 2, 32, 16)
    assert torch.allclose(g[:, 0], torch.full((1, 32, 16), 4.0)) and torch.allclose(g[:, 1], torch.full((1, 32, 16), 4.0))


def test_forward_predicts_target_at_quarter_resolution_and_trains():
    torch.manual_seed(0)
    m = create_model("rpmnet_r18").train()
    ref, tar = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    pred = m(ref, tar)
    assert pred.shape == (2, 3, 16, 16)
    loss = torch.nn.functional.mse_loss(pred, m.downsample(tar))
    loss.backward()
    # Gradients reach the embedding through the matching and D4.
    assert m.embedding.stem[0].weight.grad.abs().sum() > 0


def test_init_flow_near_zero():
    m = create_model("rpmnet_r18").eval()
    with torch.no_grad():
        e = m.embed(torch.rand(1, 3, 128, 128))
        f = m.match(e, e)
    assert f.abs().max() < 1.0  # starts close to the identity warp


def test_embed_rejects_bad_size():
    m = create_model("rpmnet_r18")
    with pytest.raises(ValueError, match="multiples of 64"):
        m.embed(torch.rand(1, 3, 100, 128))


def test_checkpoint_roundtrip_and_fp16(tmp_path):
    m = create_model("rpmnet_r18", matching="conv3").eval()
    p = save_checkpoint(m, tmp_path / "a.pt", meta={"size": 256})
    m2 = load_checkpoint(p).eval()
    assert m2.config == RPMNetConfig(18, "conv3") and m2.meta["size"] == 256 and m2.meta["trained"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.embed(x), m2.embed(x))
    half = save_checkpoint(m, tmp_path / "h.pt", half=True)
    assert half.stat().st_size < 0.6 * p.stat().st_size
    m3 = load_model(half)
    assert next(m3.parameters()).dtype == torch.float32


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an rtvos checkpoint"):
        load_checkpoint(other)
    p = save_checkpoint(create_model("rpmnet_r18"), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match="not the requested"):
        load_checkpoint(p, model=RPMNet(RPMNetConfig(34)))
    payload = torch.load(p, weights_only=True)
    payload["state_dict"].pop("embedding.stem.0.weight")
    torch.save(payload, tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="1 missing"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_load_model_random_warns():
    with pytest.warns(rtvos.models.RandomWeightsWarning):
        m = load_model("rpmnet_r18")
    assert m.meta["trained"] is False
    with pytest.raises(ValueError, match="unknown model"):
        load_model("nonsense")


def test_load_model_reporting_flags_random_weights_without_warning():
    import warnings

    from rtvos.models import load_model_reporting

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flag replaces the warning
        model, random_weights = load_model_reporting("rpmnet_r18")
        assert random_weights and model.meta["trained"] is False
        if rtvos.models.hub.default_weights_path() is not None:
            assert load_model_reporting("default")[1] is False


def test_named_random_init_is_reproducible_and_leaves_the_global_rng_alone():
    import warnings

    from rtvos.models import RandomWeightsWarning, load_model

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        a, b = load_model("rpmnet_r18"), load_model("rpmnet_r18")
    assert torch.equal(torch.rand(3), before)  # the caller's stream is not advanced or reseeded
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


class _CodeCarrier:
    def __reduce__(self):  # unpickling this would run a shell command
        import os

        return (os.system, ("echo should-never-run",))


def test_code_carrying_checkpoint_is_refused_in_our_words(tmp_path):
    """Issue #13.11: one line that says why, and never suggests weights_only=False."""
    from rtvos.models import CheckpointError, load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"format": "rtvos-checkpoint", "state_dict": {"w": _CodeCarrier()}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "contains Python code" in msg and str(path) in msg
    assert "weights_only" not in msg and "\n" not in msg


def test_nan_weights_are_refused(tmp_path):
    from rtvos.models import CheckpointError, create_model, load_checkpoint, save_checkpoint

    m = create_model("rpmnet_r18")
    with torch.no_grad():
        m.matching.flow_layer.weight[0, 0, 0, 0] = float("nan")
    path = save_checkpoint(m, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_checkpoint(path)
