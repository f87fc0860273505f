"""The clot networks and their blocks: shapes, gradients, the Logic-LSTM pooling, the double pass, sizes."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.networks.attention_blocks import (CrossAttention, ExpELU, UpBlock, conv_of_nearest_upsampling, upsample_to,
                                                  upsample_tokens)
from nnunet_ext.networks.clot_networks import (ATTENTION_MODELS, CLOT_MODELS, SegmentationHead, UpAttLLSTM,
                                               count_parameters, model_class_path)
from nnunet_ext.networks.ops.sliding_max import channel_group_max_pool, sliding_max_same
from nnunet_ext.networks.recurrent_blocks import (SECOND_PASS_ORDERS, ConvLSTMCell, LogicLSTMCell, double_pass,
                                                  logic_pool_windows)

ROLES = dict(dwi_channel=0, swan_channel=1, phase_channel=2)
TINY = dict(attention_dim=8, dwi_patch=8, susceptibility_patch=4, up_features=8, conv_channels=2, logic_channels=8,
            pool_scales=4, front_features=8, hidden_channels=10, mlp_ratio=2.0)


def _tiny(model: str, input_channels: int = 3, **overrides):
    cls = CLOT_MODELS[model]
    accepted = cls.__init__.__code__.co_varnames
    kwargs = {k: v for k, v in TINY.items() if k in accepted}
    if model in ATTENTION_MODELS:
        kwargs["slice_shape"] = [16, 16]
    return cls(input_channels, 2, **{**ROLES, **kwargs, **overrides})


# ---------------------------------------------------------------------------------------------- models

@pytest.mark.parametrize("model", list(CLOT_MODELS))
def test_output_shape_and_gradient_reaches_every_parameter(model):
    torch.manual_seed(0)
    network = _tiny(model)
    x = torch.randn(2, 3, 5, 16, 16, requires_grad=True)
    out = network(x)
    assert out.shape == (2, 2, 5, 16, 16)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    without_gradient = sorted(name for name, p in network.named_parameters()
                              if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
    # the DWI class token only reaches the output class token, which Eq. (11) drops ([1:])
    expected = (["front_end.attention.query_embedding.class_token"] if model in ATTENTION_MODELS else [])
    assert without_gradient == expected
    if model in ATTENTION_MODELS:  # its position embedding: all but the class slot learn
        position = network.front_end.attention.query_embedding.position.grad
        assert position[0, 0].abs().sum() == 0 and position[0, 1:].abs().sum() > 0


@pytest.mark.parametrize("model", list(CLOT_MODELS))
def test_models_are_found_by_the_dotted_path_the_plans_use(model):
    from pydoc import locate
    assert locate(model_class_path(model)) is CLOT_MODELS[model]


def test_deep_supervision_switch_on_decoder_returns_a_one_element_list():
    network = _tiny("UpAttLLSTM", deep_supervision=True)
    x = torch.randn(1, 3, 3, 16, 16)
    outputs = network(x)
    assert isinstance(outputs, list) and len(outputs) == 1 and outputs[0].shape == (1, 2, 3, 16, 16)
    network.decoder.deep_supervision = False  # what nnUNetTrainer.set_deep_supervision_enabled writes
    assert torch.is_tensor(network(x))


def test_roles_select_the_channels_and_other_channels_are_ignored():
    torch.manual_seed(0)
    network = _tiny("UpAttLLSTM").eval()
    shuffled = _tiny("UpAttLLSTM", 4, dwi_channel=3, swan_channel=0, phase_channel=2).eval()
    shuffled.load_state_dict(network.state_dict())
    dwi, swan, phase, extra = torch.randn(4, 1, 1, 4, 16, 16)
    with torch.no_grad():
        reference = network(torch.cat([dwi, swan, phase], 1))
        assert torch.allclose(shuffled(torch.cat([swan, extra, phase, dwi], 1)), reference, atol=1e-6)


def test_slice_axis_picks_the_recurrence_axis():
    torch.manual_seed(0)
    along_0 = _tiny("LLSTM").eval()
    along_1 = _tiny("LLSTM", slice_axis=1).eval()
    along_1.load_state_dict(along_0.state_dict())
    x = torch.randn(1, 3, 4, 12, 16)
    with torch.no_grad():
        expected = along_0(x).transpose(2, 3)
        assert torch.allclose(along_1(x.transpose(2, 3)), expected, atol=1e-6)


def test_position_embeddings_follow_another_slice_size():
    network = _tiny("AttLLSTM")  # built for 16 x 16
    assert network(torch.randn(1, 3, 2, 32, 24)).shape == (1, 2, 2, 32, 24)


@pytest.mark.parametrize("kwargs,message", [
    (dict(dwi_channel=3), "dwi_channel = 3 is not a channel index"),
    (dict(phase_channel=1), "must be different channels"),
    (dict(slice_axis=3), "slice_axis must be 0, 1 or 2"),
    (dict(logic_channels=6), r"multiple of pool_scales \(n_s = 4\)"),
    (dict(dwi_patch=6), "multiple of the context patch size"),
    (dict(slice_shape=[20, 16]), r"multiple of the patch size 8"),
    (dict(second_pass="sideways"), "unknown second pass order 'sideways'"),
    (dict(kernel_size=4), "odd"),
])
def test_bad_sizes_and_roles_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny("UpAttLLSTM", **kwargs)


def test_wrong_input_is_named():
    with pytest.raises(ValueError, match=r"expected input \[B, 3, d0, d1, d2\], got \(1, 2, 4, 16, 16\)"):
        _tiny("UpAttLLSTM")(torch.zeros(1, 2, 4, 16, 16))


def test_table4_sizes_run_on_a_256_slice():
    """The paper's sizes on its 256 x 256 crops (4 of the 12 slices, to stay quick on CPU)."""
    network = UpAttLLSTM(3, 2, **ROLES, slice_shape=[256, 256]).eval()
    with torch.no_grad():
        out = network(torch.randn(1, 3, 4, 256, 256))
    assert out.shape == (1, 2, 4, 256, 256) and torch.isfinite(out).all()


def _template_counts(template: str):
    """Parameters of every model built as the plans build it from `template`, on 256 x 256 slices."""
    from nnunet_ext_plans.cpu_plans import load_template
    from nnunet_ext_plans.upattllstm_plans import model_arch_kwargs
    sizes = {**load_template(template)["arch_kwargs"], "norm_op": nn.BatchNorm2d}
    return {name: count_parameters(CLOT_MODELS[name](3, 2, **model_arch_kwargs(name, sizes, ROLES, [256, 256], 0)))
            for name in CLOT_MODELS}


# Per-layer sizes worked out by hand (weights + biases), for the two templates' UpAttLLSTM on 256 x 256 slices.
TABLE4_LAYERS = {  # D = 32, P_D = 32, P_S = 4, MLP ratio 4, n_up = 32, skip 12, n_C = 4, n_L = 32 (n_h = 36)
    "DWI patch embedding, 32x32 conv 1 -> 32": 32 * 1024 + 32,        # 32,800
    "DWI class token + 65 positions": 32 + 65 * 32,                    # 2,112
    "SWAN/PHASE patch embedding, 4x4 conv 2 -> 32": 32 * 32 + 32,      # 1,056
    "SWAN/PHASE class token + 4097 positions": 32 + 4097 * 32,         # 131,136
    "3 LayerNorms": 3 * 64,
    "Q, K, V: Linear(32, 32)": 3 * 1056,
    "output MLP 32 -> 128 -> 32": 4224 + 4128,
    "gains alpha, beta": 2,
    "Up block skip, 3x3 conv 2 -> 12": 216 + 12,
    "Up block fuse, 7x7 conv 44 -> 32": 68_992 + 32,
    "Up block norm (affine)": 64,
    "LLSTM conv part, 3x3 conv 68 -> 16": 9792 + 16,
    "LLSTM logic part, 1x1 conv 68 -> 128": 8704 + 128,
    "head, 1x1 conv 36 -> 2": 72 + 2,
}
PAPER_SIZE_LAYERS = {  # D = 128, n_up = 128, n_C = 32, n_L = 128 (n_h = 160); the rest as Table 4
    "DWI patch embedding, 32x32 conv 1 -> 128": 131_072 + 128,
    "DWI class token + 65 positions": 128 + 65 * 128,
    "SWAN/PHASE patch embedding, 4x4 conv 2 -> 128": 4096 + 128,
    "SWAN/PHASE class token + 4097 positions": 128 + 524_416,
    "3 LayerNorms": 3 * 256,
    "Q, K, V: Linear(128, 128)": 3 * 16_512,
    "output MLP 128 -> 512 -> 128": 66_048 + 65_664,
    "gains alpha, beta": 2,
    "Up block skip, 3x3 conv 2 -> 12": 216 + 12,
    "Up block fuse, 7x7 conv 140 -> 128": 878_080 + 128,
    "Up block norm (affine)": 256,
    "LLSTM conv part, 3x3 conv 288 -> 128": 331_776 + 128,
    "LLSTM logic part, 1x1 conv 288 -> 512": 147_456 + 512,
    "head, 1x1 conv 160 -> 2": 320 + 2,
}


def test_table4_template_parameter_count_is_the_sum_of_its_layers():
    """Table 4 as read in docs/methods.md §6 gives 0.27 M parameters, not the paper's 'about 2 M': over half of it is
    the SWAN position embedding (4097 x 32) and the Up block's 7x7 conv. Nothing is padded to reach 2 M here."""
    counts = _template_counts("upattllstm")
    assert counts["UpAttLLSTM"] == sum(TABLE4_LAYERS.values()) == 266_848
    # the ablations without the Up block return to full resolution by a learned unpatchify: a 4x4 transposed
    # conv 32 -> 32 with bias, 32 * 32 * 16 + 32 = 16,416 parameters on top of the resized versions' 197,532 / 267,164
    assert counts == {"CLSTM": 90_778, "LLSTM": 21_146, "AttCLSTM": 267_164 + 16_416, "AttLLSTM": 197_532 + 16_416,
                      "UpAttLLSTM": 266_848}


def test_paper_size_template_is_about_two_million_and_keeps_the_papers_size_order():
    """paper_size: 'around 2 millions' for the attention + Logic LSTM model, its ConvLSTM equivalent larger (the
    paper: 3 M), nnU-Net's 30 M far above."""
    counts = _template_counts("upattllstm_paper_size")
    assert counts["UpAttLLSTM"] == sum(PAPER_SIZE_LAYERS.values()) == 2_209_320
    # the ablations: CLSTM = 5x5 front end (3 -> 32, 2,432) + ConvLSTM 192 -> 4 x 160 (1,106,560) + head (322)
    assert counts["CLSTM"] == 2432 + 192 * 640 * 9 + 640 + 322 == 1_109_314
    assert counts["LLSTM"] == 2432 + (192 * 128 * 9 + 128) + (192 * 512 + 512) + 322 == 322_882
    assert counts["LLSTM"] < counts["CLSTM"] and counts["AttLLSTM"] < counts["AttCLSTM"]
    assert counts["UpAttLLSTM"] < counts["AttCLSTM"]


# ---------------------------------------------------------------------------------------------- Logic LSTM

def _naive_group_pool(x: np.ndarray, windows):
    """Loop reference: each channel group, each position, max over the clipped window (TF 'same')."""
    out = np.empty_like(x)
    group = x.shape[1] // len(windows)
    spatial = x.shape[2:]
    for g, s in enumerate(windows):
        before = (s - 1) // 2
        for index in np.ndindex(*spatial):
            region = tuple(slice(max(0, i - before), min(n, i - before + s)) for i, n in zip(index, spatial))
            channels = slice(g * group, (g + 1) * group)
            out[(slice(None), channels, *index)] = x[(slice(None), channels, *region)].reshape(
                x.shape[0], group, -1).max(axis=2)
    return out


@pytest.mark.parametrize("shape,windows", [
    ((2, 6, 9, 8), [2, 4, 8]),          # odd and even sizes
    ((1, 8, 5, 7), [2, 4, 8, 16]),      # windows larger than the image
    ((1, 4, 16, 16), [3, 5]),           # odd windows
    ((1, 3, 4, 5, 6), [2, 4, 8]),       # 3D spatial input
    ((2, 2, 1, 1), [2, 4]),             # a single pixel
    ((1, 6, 9, 7), [8, 2, 4]),          # windows out of order: one group at a time
    ((1, 8, 12, 30), [2, 4, 8, 16]),    # a group covers one axis whole but not the other
    ((2, 16, 128, 128), logic_pool_windows(8)),  # the Table-4 Logic LSTM on a 128-pixel slice
])
def test_logic_pooling_equals_a_naive_reference(shape, windows):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pooled = channel_group_max_pool(x, windows)
    assert pooled.shape == x.shape
    np.testing.assert_array_equal(pooled.numpy(), _naive_group_pool(x.numpy(), windows))


def test_logic_pooling_matches_max_pool2d_with_tf_same_padding():
    x = torch.randn(2, 1, 32, 32)
    for window in (2, 4, 8, 16):
        before, after = (window - 1) // 2, window - 1 - (window - 1) // 2
        padded = F.pad(x, (before, after, before, after), value=float("-inf"))
        assert torch.equal(channel_group_max_pool(x, [window]), F.max_pool2d(padded, window, stride=1))


def test_logic_pooling_gradient_equals_max_pool2d_gradient():
    """The pooling's backward routes each output's gradient to the sample that won, as max_pool2d's does."""
    x = torch.randn(2, 1, 20, 24, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 1, 20, 24, dtype=torch.float64)
    for window in (2, 4, 8, 32):
        before, after = (window - 1) // 2, window - 1 - (window - 1) // 2
        reference = F.max_pool2d(F.pad(x, (before, after, before, after), value=float("-inf")), window, stride=1)
        expected, = torch.autograd.grad((reference * weights).sum(), x)
        pooled = channel_group_max_pool(x, [window])
        got, = torch.autograd.grad((pooled * weights).sum(), x)
        assert torch.equal(pooled, reference) and torch.allclose(got, expected)


def test_sliding_max_gradient_goes_to_the_earlier_sample_on_ties():
    x = torch.tensor([[[1.0, 3.0, 3.0, 0.0]]], requires_grad=True)
    sliding_max_same(x, 2, 2).sum().backward()  # windows [1,3] [3,3] [3,0] [0]: winners 1, 1, 2, 3
    assert x.grad.tolist() == [[[0.0, 2.0, 1.0, 1.0]]]


def test_sliding_max_gradient():
    x = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sliding_max_same(t, 4, 2), (x,))


def test_logic_windows_and_cell_parameter_split():
    assert logic_pool_windows(8) == [2, 4, 8, 16, 32, 64, 128, 256]
    reading_b = LogicLSTMCell(nn.Conv2d, 32, 4, 32, 8, 3, conv_part_sees_logic_state=True)
    reading_a = LogicLSTMCell(nn.Conv2d, 32, 4, 32, 8, 3, conv_part_sees_logic_state=False)
    assert reading_b.conv_part.weight.shape == (16, 32 + 36, 3, 3)   # [x; h] -> 4 n_C, k x k
    assert reading_a.conv_part.weight.shape == (16, 32 + 4, 3, 3)    # [x; h^C]
    assert reading_b.logic_part.weight.shape == (128, 32 + 36, 1, 1)  # [x; h] -> 4 n_L, 1 x 1
    assert count_parameters(reading_b) < count_parameters(ConvLSTMCell(nn.Conv2d, 32, 36))


@pytest.mark.parametrize("pool_scales,sees_far_corner", [(4, False), (5, True)])
def test_logic_gates_reach_as_far_as_the_largest_window(pool_scales, sees_far_corner):
    """A window of s samples reaches (s - 1) // 2 back and s // 2 ahead ('same'): on a 16-pixel slice h at one
    corner depends on the opposite corner once the largest window is 32 (n_s = 5), not with 16 (n_s = 4)."""
    torch.manual_seed(0)
    cell = LogicLSTMCell(nn.Conv2d, 1, 1, 2 * pool_scales, pool_scales, 3)
    quiet = torch.zeros(1, 1, 16, 16)
    with torch.no_grad():
        reference = cell(quiet, cell.initial_state(quiet))[0][..., 0, 0]
        changed = []
        for spike in (10.0, -10.0):  # one sign wins the max of every logic channel whose weight has that sign
            x = quiet.clone()
            x[..., 15, 15] = spike
            changed.append(not torch.allclose(cell(x, cell.initial_state(x))[0][..., 0, 0], reference))
    assert any(changed) == sees_far_corner


# ---------------------------------------------------------------------------------------------- double pass

class _RecordingCell(ConvLSTMCell):
    """A ConvLSTM cell that records every step: the projected input it is given, and the states."""

    def __init__(self):
        super().__init__(nn.Conv2d, 2, 3)
        self.calls = []

    def step(self, projected, state):
        new_state = super().step(projected, state)
        self.calls.append({"projected": projected, "given": state, "returned": new_state})
        return new_state


@pytest.mark.parametrize("second_pass,order", [("forward", [0, 1, 2, 3]), ("reverse", [3, 2, 1, 0])])
def test_second_pass_starts_from_the_first_pass_final_state(second_pass, order):
    torch.manual_seed(0)
    cell = _RecordingCell()
    inputs = torch.randn(2, 4, 2, 5, 5)
    outputs = double_pass(cell, inputs, second_pass)
    assert len(cell.calls) == 8
    first, second = cell.calls[:4], cell.calls[4:]
    assert all(torch.equal(s, torch.zeros_like(s)) for s in first[0]["given"])       # pass 1 from zeros
    for call, t in zip(first, range(4)):
        assert torch.allclose(call["projected"][0], cell.project_inputs(inputs[:, t])[0], atol=1e-6)
    assert second[0]["given"] is first[-1]["returned"]                                # pass 2 from its end
    for call, t in zip(second, order):
        assert torch.allclose(call["projected"][0], cell.project_inputs(inputs[:, t])[0], atol=1e-6)
        assert torch.equal(outputs[:, t], call["returned"][0])                        # outputs: pass-2 h


def _reference_step(cell, x, state):
    """A step as Eq. (13)-(16) write it: the gate convolutions over the concatenation [x_t; h_{t-1}]."""
    h, c = state
    xh = torch.cat([x, h], dim=1)
    if isinstance(cell, ConvLSTMCell):
        i, f, o, g = torch.chunk(cell.gates(xh), 4, dim=1)
    else:
        batch, spatial = x.shape[0], x.shape[2:]
        conv_input = xh if cell.conv_part_sees_logic_state else torch.cat([x, h[:, :cell.conv_channels]], dim=1)
        conv = cell.conv_part(conv_input).view(batch, 4, cell.conv_channels, *spatial)
        logic = cell.transfer(cell.logic_part(xh).reshape(batch * 4, cell.logic_channels, *spatial))
        i, f, o, g = torch.cat([conv, logic.view(batch, 4, cell.logic_channels, *spatial)], dim=2).unbind(1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@pytest.mark.parametrize("make_cell", [
    lambda: ConvLSTMCell(nn.Conv2d, 5, 6),
    lambda: LogicLSTMCell(nn.Conv2d, 5, 2, 8, 4, 3, conv_part_sees_logic_state=True),
    lambda: LogicLSTMCell(nn.Conv2d, 5, 2, 8, 4, 3, conv_part_sees_logic_state=False),
])
def test_split_gate_convolutions_equal_the_concatenated_form(make_cell):
    """The input part W_x * x of every gate is computed once for all slices; the double pass must still equal
    the textbook step on [x_t; h_{t-1}], run twice over the slices, forward and backward."""
    torch.manual_seed(0)
    cell = make_cell()
    inputs = torch.randn(2, 5, 5, 12, 12, requires_grad=True)
    state = cell.initial_state(inputs[:, 0])
    for t in range(5):
        state = _reference_step(cell, inputs[:, t], state)
    reference = []
    for t in range(5):
        state = _reference_step(cell, inputs[:, t], state)
        reference.append(state[0])
    reference = torch.stack(reference, dim=1)
    fast = double_pass(cell, inputs)
    assert fast.shape == (2, 5, cell.hidden_channels, 12, 12)
    assert torch.allclose(fast, reference, atol=1e-5)
    weights = torch.randn_like(fast)
    grad_fast = torch.autograd.grad((fast * weights).sum(), [inputs, *cell.parameters()])
    grad_reference = torch.autograd.grad((reference * weights).sum(), [inputs, *cell.parameters()])
    for a, b in zip(grad_fast, grad_reference):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("make_cell,height,width", [
    (lambda: ConvLSTMCell(nn.Conv2d, 5, 6), 12, 12),
    (lambda: LogicLSTMCell(nn.Conv2d, 5, 2, 8, 4, 3, conv_part_sees_logic_state=True), 12, 9),
    (lambda: LogicLSTMCell(nn.Conv2d, 5, 2, 8, 4, 3, conv_part_sees_logic_state=False), 16, 16),
    (lambda: LogicLSTMCell(nn.Conv2d, 5, 4, 16, 8, 3), 20, 7),  # windows up to 256 span both axes
])
@pytest.mark.parametrize("second_pass", SECOND_PASS_ORDERS)
def test_in_place_inference_equals_the_autograd_path(make_cell, height, width, second_pass):
    """Without autograd the double pass updates its state in place, pools group by group and lets whole-slice
    windows broadcast: the same h as the training path, which the reference test above pins to Eq. (13)-(16)."""
    torch.manual_seed(0)
    cell = make_cell()
    inputs = torch.randn(2, 5, 5, height, width)
    with torch.enable_grad():
        expected = double_pass(cell, inputs, second_pass)
    with torch.no_grad():
        fast = double_pass(cell, inputs, second_pass)
    with torch.inference_mode():
        under_inference_mode = double_pass(cell, inputs, second_pass)
    assert expected.requires_grad and not fast.requires_grad
    assert torch.allclose(fast, expected, atol=1e-6)
    assert torch.equal(under_inference_mode, fast)


@pytest.mark.parametrize("inplace", [False, True])
def test_exp_elu_at_inference_equals_elu(inplace):
    x = torch.cat([torch.linspace(-30, 5, 2001), torch.tensor([0.0, -1e-8, 1e-8, -0.0])])
    expected = F.elu(x)
    with torch.no_grad():
        given = x.clone()
        fast = ExpELU(inplace=inplace)(given)
    assert torch.allclose(fast, expected, rtol=0, atol=2e-7)
    assert (fast.data_ptr() == given.data_ptr()) == inplace
    x.requires_grad_(True)
    assert torch.equal(ExpELU()(x), expected)  # training: nn.ELU itself


def test_segmentation_head_equals_its_convolution():
    torch.manual_seed(0)
    head = SegmentationHead(nn.Conv2d, 6, 3, deep_supervision=False)
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    assert torch.allclose(head(x), head.head(x), atol=1e-6)
    weights = torch.randn(2, 3, 5, 7)
    grads = torch.autograd.grad((head(x) * weights).sum(), [x, *head.parameters()])
    reference = torch.autograd.grad((head.head(x) * weights).sum(), [x, *head.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, reference))


def test_double_pass_lets_the_first_slice_see_the_last():
    torch.manual_seed(0)
    cell = ConvLSTMCell(nn.Conv2d, 1, 2)
    inputs = torch.randn(1, 5, 1, 4, 4, requires_grad=True)
    double_pass(cell, inputs)[:, 0].sum().backward()
    assert inputs.grad[:, 4].abs().sum() > 0  # only through pass 1's final state


# ---------------------------------------------------------------------------------------------- attention

def test_cheap_attention_equals_eq10_with_upsampled_queries():
    """Attending with N_D + 1 queries and repeating the outputs == Eq. (10), softmax(Up_r(Q) K^T / sqrt(D)) V."""
    torch.manual_seed(0)
    block = CrossAttention(nn.Conv2d, 1, 2, 8, 8, 2, (16, 16))
    dwi, susceptibility = torch.randn(2, 1, 16, 16), torch.randn(2, 2, 16, 16)
    cheap, context_tokens, grid = block.attend(dwi, susceptibility)
    query_tokens, query_grid = block.query_embedding(dwi)
    queries = upsample_tokens(block.query_projection(block.query_norm(query_tokens)), query_grid, 4)
    context = block.context_norm(context_tokens)
    keys, values = block.key_projection(context), block.value_projection(context)
    explicit = torch.softmax(queries @ keys.transpose(1, 2) / math.sqrt(8), dim=-1) @ values
    assert grid == (8, 8) and cheap.shape == (2, 65, 8)
    assert torch.allclose(cheap, explicit, atol=1e-5)


def test_residual_gains_start_at_one_and_can_be_per_channel():
    scalar = CrossAttention(nn.Conv2d, 1, 2, 8, 8, 4, (16, 16))
    per_channel = CrossAttention(nn.Conv2d, 1, 2, 8, 8, 4, (16, 16), per_channel_gains=True)
    assert scalar.attention_gain.shape == () and float(scalar.mlp_gain.detach()) == 1.0
    assert per_channel.attention_gain.shape == (8,) and torch.all(per_channel.mlp_gain == 1)


# ---------------------------------------------------------------------------------------------- Up block

@pytest.mark.parametrize("factor,kernel", [(4, 7), (2, 3), (3, 5), (8, 7)])
def test_conv_of_nearest_upsampling_equals_upsample_then_conv(factor, kernel):
    torch.manual_seed(0)
    x, weight = torch.randn(2, 5, 6, 4), torch.randn(3, 5, kernel, kernel)
    direct = F.conv2d(upsample_to(x, (6 * factor, 4 * factor), "nearest"), weight, padding=kernel // 2)
    composed = conv_of_nearest_upsampling(x, weight, factor)
    assert composed.shape == direct.shape
    assert torch.allclose(composed, direct, atol=1e-4)


def test_up_block_fast_path_equals_eq12_computed_directly():
    """Eq. (12) as written: Norm(ELU(Conv7x7([Up(F_att); ReLU(Conv3x3(S))]))) with Up = nearest x P_S."""
    torch.manual_seed(0)
    block = UpBlock(nn.Conv2d, 8, 2, 6, norm_op=nn.BatchNorm2d).eval()
    block.fuse.norm.running_mean.normal_()  # a norm that is not the identity
    features, skip_image = torch.randn(3, 8, 4, 4), torch.randn(3, 2, 16, 16)
    direct = block.fuse(torch.cat([upsample_to(features, (16, 16)), block.skip(skip_image)], dim=1))
    assert torch.allclose(block(features, skip_image), direct, atol=1e-5)
    linear = UpBlock(nn.Conv2d, 8, 2, 6, upsample_mode="linear").eval()
    expected = linear.fuse(torch.cat([upsample_to(features, (16, 16), "linear"), linear.skip(skip_image)], dim=1))
    assert torch.equal(linear(features, skip_image), expected)  # only nearest upsampling takes the fast path
