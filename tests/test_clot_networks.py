"""The clot networks and their blocks: shapes, gradients, the Logic-LSTM pooling, the double pass, sizes."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.networks.attention_blocks import CrossAttention, upsample_tokens
from nnunet_ext.networks.clot_networks import (ATTENTION_MODELS, CLOT_MODELS, LLSTM, UpAttLLSTM, count_parameters,
                                               model_class_path)
from nnunet_ext.networks.recurrent_blocks import (ConvLSTMCell, LogicLSTMCell, channel_group_max_pool, double_pass,
                                                  logic_pool_windows, sliding_max_same)

ROLES = dict(dwi_channel=0, swan_channel=1, phase_channel=2)
TINY = dict(attention_dim=8, dwi_patch=8, susceptibility_patch=4, up_features=8, conv_channels=2, logic_channels=8,
            pool_scales=4, front_features=8, hidden_channels=10, mlp_ratio=2.0)
PARAMETER_BUDGET = 2_500_000  # the paper: "around 2 millions" for (Up)AttLLSTM


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


def test_parameter_count_at_table4_sizes_is_reported_and_within_budget():
    """Table 4 as read in methods.md 3.4 (D=32, P_D=32, P_S=4, n_C=4, n_L=32, n_s=8, k=3; n_up=32).

    The paper quotes about 2 M parameters for AttLLSTM; these sizes give about 0.27 M, most of it the SWAN
    position embedding and the Up block's 7x7 conv. The unknown MLP sizes and n_up would explain the rest;
    nothing is padded to reach the paper's number."""
    D, P_D, P_S, n_up, n_C, n_L, k, H = 32, 32, 4, 32, 4, 32, 3, 256
    n_h = n_C + n_L
    attention = ((1 * P_D * P_D * D + D) + (2 * P_S * P_S * D + D)            # patch embeddings
                 + 2 * D + ((H // P_D) ** 2 + 1) * D + ((H // P_S) ** 2 + 1) * D  # class and position
                 + 3 * 2 * D                                                    # 3 LayerNorms
                 + 3 * (D * D + D)                                              # Q, K, V
                 + (D * 4 * D + 4 * D) + (4 * D * D + D)                        # output MLP
                 + 2)                                                           # alpha, beta
    up_block = (2 * 12 * 9 + 12) + ((D + 12) * n_up * 49 + n_up) + 2 * n_up
    logic_lstm = (n_up + n_h) * 4 * n_C * k * k + 4 * n_C + (n_up + n_h) * 4 * n_L + 4 * n_L
    head = n_h * 2 + 2
    counts = {name: count_parameters(CLOT_MODELS[name](3, 2, **ROLES, **(
        {"slice_shape": [H, H]} if name in ATTENTION_MODELS else {}))) for name in CLOT_MODELS}
    print("\nparameters at Table-4 sizes: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
    assert counts["UpAttLLSTM"] == attention + up_block + logic_lstm + head
    assert counts["UpAttLLSTM"] <= PARAMETER_BUDGET
    assert counts["LLSTM"] < counts["CLSTM"] and counts["AttLLSTM"] < counts["AttCLSTM"]  # the logic saving
    assert max(counts.values()) <= PARAMETER_BUDGET


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

class _RecordingCell(nn.Module):
    """A ConvLSTM cell that records every state it is given and returns."""

    def __init__(self):
        super().__init__()
        self.cell = ConvLSTMCell(nn.Conv2d, 2, 3)
        self.hidden_channels = 3
        self.calls = []

    def initial_state(self, x):
        return self.cell.initial_state(x)

    def forward(self, x, state):
        new_state = self.cell(x, state)
        self.calls.append({"x": x, "given": state, "returned": new_state})
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
        assert torch.equal(call["x"], inputs[:, t])
    assert second[0]["given"] is first[-1]["returned"]                                # pass 2 from its end
    for call, t in zip(second, order):
        assert torch.equal(call["x"], inputs[:, t])
        assert torch.equal(outputs[:, t], call["returned"][0])                        # outputs: pass-2 h


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
