"""Per-sample modality dropout on real batch tensors: what is dropped, by how much, and what is untouched."""
import pytest
import torch

from nnunet_ext.dropout.modality_dropout import apply_modality_dropout, draw_modality_dropout


def _batch(batch_size=16, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, channels, 6, 7, 5, generator=generator) + 3.0  # no zeros: ratios are defined


def _draw(batch, droppable=(1,), probability=0.5, factor=0.25, noise_std=0.01, seed=1):
    return draw_modality_dropout(batch.shape[0], batch.shape[1], droppable, probability, factor, noise_std,
                                 generator=torch.Generator().manual_seed(seed))


def test_dropped_channel_is_scaled_by_the_scheduled_factor_within_noise():
    batch = _batch(batch_size=64)
    draw = _draw(batch, factor=0.25, noise_std=0.01)
    out = apply_modality_dropout(batch, draw)
    pairs = torch.nonzero(draw.dropped).tolist()
    assert len(pairs) > 10
    for sample, channel in pairs:
        ratio = out[sample, channel] / batch[sample, channel]
        # one multiplier for the whole channel image, within 6 sigma of f(t)
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-5)
        assert abs(float(ratio.flatten()[0]) - 0.25) < 0.06
    multipliers = draw.multipliers[draw.dropped]
    assert multipliers.std() > 0  # a multiplier of its own per (sample, channel), not one reused value


def test_kept_channels_are_bit_identical_and_non_droppable_channels_never_dropped():
    batch = _batch(batch_size=64)
    draw = _draw(batch, droppable=(1,), probability=0.8)
    out = apply_modality_dropout(batch, draw)
    assert not draw.dropped[:, [0, 2]].any()
    for sample in range(batch.shape[0]):
        for channel in range(3):
            if not draw.dropped[sample, channel]:
                assert torch.equal(out[sample, channel], batch[sample, channel])
                assert draw.multipliers[sample, channel] == 1.0


def test_factor_zero_without_noise_gives_exact_zeros():
    batch = _batch()
    draw = _draw(batch, probability=1.0, factor=0.0, noise_std=0.0)
    out = apply_modality_dropout(batch, draw)
    assert torch.count_nonzero(out[:, 1]) == 0
    assert torch.equal(out[:, [0, 2]], batch[:, [0, 2]])


def test_a_sample_never_loses_every_channel():
    batch = _batch(batch_size=200)
    draw = _draw(batch, droppable=(0, 1, 2), probability=1.0, factor=0.0, noise_std=0.0)
    assert (draw.dropped.sum(dim=1) == 2).all()  # all three drawn, one rescued
    out = apply_modality_dropout(batch, draw)
    assert all(torch.count_nonzero(out[b]) > 0 for b in range(batch.shape[0]))
    rescued = (~draw.dropped).float().mean(dim=0)
    assert (rescued > 0.2).all()  # the rescued channel is chosen uniformly, not always the same one


@pytest.mark.parametrize("probability", [0.2, 0.5, 0.8])
def test_empirical_drop_rate_matches_the_probability(probability):
    draw = draw_modality_dropout(20000, 3, (1, 2), probability, 0.5, 0.01,
                                 generator=torch.Generator().manual_seed(7))
    rates = draw.dropped.float().mean(dim=0)
    assert rates[0] == 0
    # binomial std at n=20000 is <= 0.0036; 0.015 is > 4 sigma
    assert abs(float(rates[1]) - probability) < 0.015
    assert abs(float(rates[2]) - probability) < 0.015
    # independent draws per channel: both dropped about p^2 of the time
    both = (draw.dropped[:, 1] & draw.dropped[:, 2]).float().mean()
    assert abs(float(both) - probability ** 2) < 0.015


def test_same_seed_same_draw_other_seed_other_draw():
    first = draw_modality_dropout(32, 3, (1,), 0.5, 0.5, 0.01, generator=torch.Generator().manual_seed(3))
    again = draw_modality_dropout(32, 3, (1,), 0.5, 0.5, 0.01, generator=torch.Generator().manual_seed(3))
    other = draw_modality_dropout(32, 3, (1,), 0.5, 0.5, 0.01, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first.dropped, again.dropped) and torch.equal(first.multipliers, again.multipliers)
    assert not torch.equal(first.multipliers, other.multipliers)


def test_apply_is_not_in_place_unless_asked():
    batch = _batch()
    copy = batch.clone()
    draw = _draw(batch, probability=1.0)
    apply_modality_dropout(batch, draw)
    assert torch.equal(batch, copy)
    apply_modality_dropout(batch, draw, inplace=True)
    assert not torch.equal(batch, copy)


@pytest.mark.parametrize("kwargs,message", [
    (dict(drop_probability=1.5), "drop_probability must be in"),
    (dict(drop_probability=-0.1), "drop_probability must be in"),
    (dict(droppable=(1, 1)), "duplicates"),
    (dict(droppable=(3,)), "out of range"),
    (dict(noise_std=-1.0), "noise_std"),
])
def test_bad_draw_arguments_are_named(kwargs, message):
    arguments = dict(batch_size=2, num_channels=3, droppable=(1,), drop_probability=0.5, factor=0.5)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        draw_modality_dropout(**arguments)


def test_draw_must_match_the_batch_shape():
    draw = draw_modality_dropout(2, 3, (1,), 0.5, 0.5)
    with pytest.raises(ValueError, match="does not match"):
        apply_modality_dropout(torch.zeros(2, 2, 4, 4, 4), draw)
