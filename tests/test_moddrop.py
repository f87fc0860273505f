"""ModDrop+ dynamic first convolution and ModDrop++ co-training."""
import copy
import glob
import json
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_ext.losses.similarity import feature_dissimilarity, ssim
from nnunet_ext.networks.dynamic_head import (DynamicFirstConv, find_dynamic_head, modality_code_from_input,
                                              training_modality_code, using_modality_code, wrap_first_convolution)
from nnunet_ext.training.moddrop_trainer import cotraining_settings
from nnunet_ext.training.variants import trainer_variant


def _plain_unet(dims=3, features=(8, 16, 32)):
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dims == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return PlainConvUNet(3, len(features), list(features), conv, 3, [1] + [2] * (len(features) - 1), 2, 2,
                         [2] * (len(features) - 1), conv_bias=True, norm_op=norm, norm_op_kwargs={"affine": True},
                         nonlin=nn.LeakyReLU, deep_supervision=False)


def _residual_unet(dims=3):
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dims == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return ResidualEncoderUNet(3, 3, [8, 16, 32], conv, 3, [1, 2, 2], [1, 2, 2], 2, [1, 1], conv_bias=True,
                               norm_op=norm, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
                               deep_supervision=False)


@pytest.mark.parametrize("build,dims", [(_plain_unet, 3), (_plain_unet, 2), (_residual_unet, 3), (_residual_unet, 2)])
def test_freshly_wrapped_network_gives_the_unwrapped_output(build, dims):
    torch.manual_seed(0)
    network = build(dims)
    reference = copy.deepcopy(network)
    wrap_first_convolution(network, 3)
    x = torch.randn(2, 3, *([16] * dims))
    x[1, 2] = 0  # a missing channel changes the code, but identity scales ignore it
    with torch.no_grad():
        torch.testing.assert_close(network(x), reference(x), rtol=1e-5, atol=1e-5)


def test_first_convolution_is_replaced_everywhere_it_is_referenced():
    network = _plain_unet()
    head = wrap_first_convolution(network, 3)
    block = network.encoder.stages[0][0].convs[0]
    assert block.conv is head and block.all_modules[0] is head
    assert find_dynamic_head(network) is head
    residual = _residual_unet()
    head = wrap_first_convolution(residual, 3)
    assert residual.encoder.stem.convs[0].conv is head and residual.encoder.stem.convs[0].all_modules[0] is head


def test_extra_parameters_are_one_linear_controller():
    network = _plain_unet()
    before = sum(p.numel() for p in network.parameters())
    head = wrap_first_convolution(network, 3)
    after = sum(p.numel() for p in network.parameters())
    # controller: 3 codes -> 8 x 3 weight scales + 8 bias scales, with bias
    assert after - before == (3 + 1) * (8 * 3 + 8)
    assert isinstance(head.controller, nn.Linear) and head.controller.in_features == 3


@pytest.mark.parametrize("dims", [2, 3])
def test_grouped_convolution_equals_a_per_sample_loop(dims):
    torch.manual_seed(1)
    conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(3, 5, 3, padding=1, stride=2)
    head = DynamicFirstConv(conv)
    nn.init.normal_(head.controller.weight)
    nn.init.normal_(head.controller.bias)
    x = torch.randn(4, 3, *([9] * dims))
    code = torch.tensor([[1.0, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]])
    with torch.no_grad(), using_modality_code(nn.Sequential(head), code):
        batched = head(x)
        weight_scales, bias_scales = head.scales(code)
        for n in range(4):
            weight = conv.weight * weight_scales[n].view(5, 3, *[1] * dims)
            bias = conv.bias * bias_scales[n]
            convolve = F.conv3d if dims == 3 else F.conv2d
            expected = convolve(x[n:n + 1], weight, bias, stride=2, padding=1)
            torch.testing.assert_close(batched[n:n + 1], expected, rtol=1e-5, atol=1e-5)


def test_code_from_input_marks_a_zeroed_channel_of_that_sample_only():
    x = torch.randn(3, 3, 4, 4, 4)
    assert torch.equal(modality_code_from_input(x), torch.ones(3, 3))
    x[1, 1] = 0
    assert torch.equal(modality_code_from_input(x), torch.tensor([[1.0, 1, 1], [1, 0, 1], [1, 1, 1]]))


def test_stated_code_wins_inside_the_context_only():
    torch.manual_seed(2)
    network = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1))
    head = wrap_first_convolution(network, 2)
    nn.init.normal_(head.controller.weight)
    x = torch.randn(1, 2, 5, 5, 5)
    with torch.no_grad():
        derived = network(x)  # code (1, 1) from the input
        with using_modality_code(network, torch.tensor([[1.0, 0.0]])):
            stated = network(x)
        again = network(x)
    assert not torch.allclose(stated, derived) and torch.equal(derived, again)


def test_ssim_and_dissimilarity():
    a = torch.randn(2, 4, 12, 12, 12)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(feature_dissimilarity(a, a)) == pytest.approx(0.0, abs=1e-6)
    noisy = a + 0.5 * torch.randn_like(a)
    noisier = a + 2.0 * torch.randn_like(a)
    assert 0 < float(feature_dissimilarity(a, noisy)) < float(feature_dissimilarity(a, noisier))
    assert float(ssim(a, noisy)) == pytest.approx(float(ssim(noisy, a)), abs=1e-6)
    assert float(feature_dissimilarity(a, noisy, "mse")) == pytest.approx(float(F.mse_loss(a, noisy)))
    with pytest.raises(ValueError, match="unknown similarity 'kl'"):
        feature_dissimilarity(a, a, "kl")
    with pytest.raises(ValueError, match="one shape"):
        ssim(a, a[:, :2])


@pytest.mark.parametrize("shape", [(2, 4, 12, 12, 12), (2, 4, 24, 24)])
def test_ssim_is_float32_under_low_precision_autocast(shape):
    """Under autocast the blurs would run in half precision, where E[a^2] - mu^2 cancels (CUDA: float16; here
    CPU bfloat16, coarser still). Features with an offset much larger than their local variation, as a first
    convolution's output with a bias has, make the cancellation visible: half-precision SSIM leaves [0, 1]."""
    generator = torch.Generator().manual_seed(3)
    a = 4.0 + 0.05 * torch.randn(*shape, generator=generator)
    b = a + 0.02 * torch.randn(*shape, generator=generator)
    reference = ssim(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = ssim(a, b)
        dissimilarity = feature_dissimilarity(a, b)
        mse = feature_dissimilarity(a, b, "mse")
    assert under_autocast.dtype == torch.float32 and dissimilarity.dtype == torch.float32
    assert float(under_autocast) == float(reference) and float(dissimilarity) == float(1.0 - reference)
    assert float(mse) == pytest.approx(float(F.mse_loss(a, b)), rel=1e-6)
    # half-precision inputs (what a network under autocast hands over) are upcast, and gradients reach them
    a_half = a.bfloat16().requires_grad_()
    value = ssim(a_half, b.bfloat16())
    value.backward()
    assert value.dtype == torch.float32 and a_half.grad is not None and torch.isfinite(a_half.grad).all()
    assert value.item() == pytest.approx(ssim(a.bfloat16().float(), b.bfloat16().float()).item(), abs=1e-7)


@pytest.mark.parametrize("kept,zero_in_data,expected", [
    ([[1, 1, 1], [1, 1, 1]], [], [[1, 1, 1], [1, 1, 1]]),
    ([[1, 0, 1], [1, 1, 1]], [], [[1, 0, 1], [1, 1, 1]]),                 # dropped by the draw
    ([[1, 1, 1], [1, 1, 1]], [(1, 2)], [[1, 1, 1], [1, 1, 0]]),           # B0 absent in the data of sample 1
    ([[1, 0, 1], [1, 0, 1]], [(0, 2), (1, 1)], [[1, 0, 0], [1, 0, 1]]),   # both, overlapping
])
def test_training_code_is_the_draw_and_the_data(kept, zero_in_data, expected):
    x = torch.randn(2, 3, 4, 4, 4)
    for sample, channel in zero_in_data:
        x[sample, channel] = 0
    code = training_modality_code(torch.tensor(kept, dtype=torch.bool), x)
    assert torch.equal(code, torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\(2, 2\) does not match data of shape \(2, 3, 4, 4, 4\)"):
        training_modality_code(torch.ones(2, 2, dtype=torch.bool), x)


# ---- trainers, in process and through the stock CLI ------------------------------------------------------

@pytest.fixture
def make_trainer(nnunet_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", nnunet_workspace.paths["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    folder = os.path.join(nnunet_workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke")
    plans = json.load(open(os.path.join(folder, "nnUNetPlans_CPU.json")))
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))

    def make(name):
        trainer = trainer_variant(name)(plans={**plans, "continue_training": False}, configuration="3d_fullres",
                                        fold=0, dataset_json=dataset_json, device=torch.device("cpu"))
        trainer.initialize()
        trainer.on_train_epoch_start()
        return trainer
    return make


def _batch(trainer, seed=0):
    patch = trainer.configuration_manager.patch_size
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(2, 3, *patch, generator=generator)
    target = (data[:, :1] > 1.0).float()  # a learnable target: bright DWI
    targets = [F.interpolate(target, size=[max(1, round(p * s)) for p, s in zip(patch, scale)], mode="nearest")
               for scale in trainer._get_deep_supervision_scales()]
    return data, targets


def test_moddrop_plus_trains_with_the_code_of_its_draw(make_trainer):
    trainer = make_trainer("nnUNetTrainerModDropPlus_p08_8epochs")
    head = find_dynamic_head(trainer.network)
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append((module._stated_code.clone(), args[0].clone())))
    for step in range(6):
        data, targets = _batch(trainer, seed=step)
        trainer.train_step({"data": data, "target": targets})
    codes = torch.cat([code for code, _ in seen])
    inputs = torch.cat([x for _, x in seen])
    adc = trainer.modality_dropout.droppable_indices[0]
    assert torch.equal(codes[:, [0, 2]], torch.ones(len(codes), 2))  # only ADC can be dropped
    assert 0 < int((codes[:, adc] == 0).sum()) < len(codes)
    # code 0 exactly where the network received an all-zero ADC (dropout factor 0, no noise)
    assert torch.equal(codes[:, adc] == 0, inputs[:, adc].flatten(1).abs().amax(1) == 0)
    assert head._stated_code is None  # the stated code does not leak into validation or inference


@pytest.mark.parametrize("name", ["nnUNetTrainerModDropPlus_p08_8epochs", "nnUNetTrainerModDropPlusPlus_p08_8epochs"])
def test_a_channel_zero_in_the_data_is_absent_in_training_as_at_inference(make_trainer, name):
    """Sample 0 comes from a center without B0 (zero in the data itself; only ADC is droppable). Training must
    state the code that validation and inference read off the same input: B0 absent for sample 0."""
    trainer = make_trainer(name)
    head = find_dynamic_head(trainer.network)
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append((module._stated_code.clone(), args[0].clone())))
    b0 = trainer.modality_dropout.channel_names.index("B0")
    for step in range(4):
        data, targets = _batch(trainer, seed=step)
        data[0, b0] = 0
        trainer.train_step({"data": data, "target": targets})
    codes = torch.cat([code for code, _ in seen])
    inputs = torch.cat([x for _, x in seen])
    # every forward sample (ModDrop++: full and dropped halves) has the code inference would read
    assert torch.equal(codes, modality_code_from_input(inputs))
    samples_without_b0 = inputs[:, b0].flatten(1).abs().amax(1) == 0
    assert int(samples_without_b0.sum()) == len(codes) // 2  # sample 0 of every batch (and of both halves)
    assert torch.equal(codes[:, b0], (~samples_without_b0).float())
    adc = trainer.modality_dropout.droppable_indices[0]
    assert 0 < int((codes[:, adc] == 0).sum()) < len(codes)  # the draw still drops ADC


def test_cotraining_loss_is_finite_decreases_and_switches_off_at_weight_zero(make_trainer, monkeypatch):
    trainer = make_trainer("nnUNetTrainerModDropPlusPlus_p05_8epochs")
    data, targets = _batch(trainer)
    dropped = data.clone()
    dropped[:, 1] = 0
    code = torch.tensor([[1.0, 0, 1], [1, 0, 1]])
    losses = []
    for _ in range(12):  # overfit one batch
        trainer.optimizer.zero_grad()
        loss, dissimilarity = trainer.cotraining_loss(data, dropped, code, targets)
        assert torch.isfinite(loss) and torch.isfinite(dissimilarity)
        loss.backward()
        trainer.optimizer.step()
        losses.append(loss.detach().item())
    assert losses[-1] < losses[0]

    with torch.no_grad():
        trainer.cotraining = {"weight": 1.0, "similarity": "ssim"}
        weighted, dissimilarity = trainer.cotraining_loss(data, dropped, code, targets)
        trainer.cotraining = {"weight": 0.0, "similarity": "ssim"}
        unweighted, _ = trainer.cotraining_loss(data, dropped, code, targets)
    assert float(dissimilarity) > 0
    assert float(weighted - unweighted) == pytest.approx(float(dissimilarity), rel=1e-4)


def test_bad_cotraining_settings_stop_start_up(make_trainer, monkeypatch, tmp_path):
    """The co-training is spelled in the name; the variables that once set it (and left the name unchanged) are
    refused with the spelling to use, before nnU-Net writes anything."""
    monkeypatch.setenv("NNUNET_EXT_COTRAINING_WEIGHT", "0.3")
    with pytest.raises(ValueError, match="NNUNET_EXT_COTRAINING_WEIGHT no longer sets ModDrop\\+\\+'s co-training "
                                         "weight: spell it in the trainer name instead, e.g. "
                                         "nnUNetTrainerModDropPlusPlus_p05_w03"):
        make_trainer("nnUNetTrainerModDropPlusPlus_p05_8epochs")
    assert not (tmp_path / "results").exists()
    monkeypatch.delenv("NNUNET_EXT_COTRAINING_WEIGHT")
    assert cotraining_settings(0.3, "mse") == {"weight": 0.3, "similarity": "mse"}
    for weight, similarity, message in ((-1.0, "ssim", "weight must be a number >= 0, got -1.0"),
                                        (float("nan"), "ssim", "weight must be a number >= 0, got nan"),
                                        (0.5, "kl", "'ssim' or 'mse', got 'kl'")):
        with pytest.raises(ValueError, match=message):
            cotraining_settings(weight, similarity)


def test_stock_train_continue_and_predict_with_adc_missing(nnunet_workspace, tmp_path):
    trainer = "nnUNetTrainerModDropPlus_p05_8epochs_3it_1valit"
    no_validation = {"NNUNET_EXT_FINAL_VALIDATION": "0"}  # nnU-Net's validation after training: not tested here
    nnunet_workspace.run(nnunet_workspace.train_command(trainer), no_validation)
    fold = os.path.join(nnunet_workspace.results_folder(trainer), "fold_0")
    checkpoint = torch.load(os.path.join(fold, "checkpoint_final.pth"), weights_only=False)
    controller_keys = [k for k in checkpoint["network_weights"] if "controller" in k]
    assert controller_keys and checkpoint["trainer_name"] == trainer
    settings = json.load(open(os.path.join(fold, "nnunet_ext_settings.json")))["settings"]
    assert settings["modality_dropout"]["droppable_names"] == ["ADC"] and "inference" in settings["modality_code"]
    nnunet_workspace.run(nnunet_workspace.train_command(trainer, "--c"), no_validation)  # the checkpoint loads

    images = os.path.join(nnunet_workspace.raw_dataset, "imagesTs")
    output = tmp_path / "no_adc"
    nnunet_workspace.run(["nnunet_ext_predict", "-i", images, "-o", str(output), "-d", "501", "-c", "3d_fullres",
                          "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", trainer, "-device", "cpu", "--disable_tta",
                          "-npp", "0", "-nps", "0", "--missing", "ADC"])
    assert sorted(f for f in os.listdir(output) if f.endswith(".nii.gz")) == \
        [f"stroke_{c}_003.nii.gz" for c in "ABCD"]


def test_stock_train_runs_moddrop_plus_plus_end_to_end(nnunet_workspace):
    """ModDrop++'s own train_step (full and dropped batch, co-training loss) through nnUNetv2_train: every
    epoch trains and logs a finite co-training term, and the final checkpoint is finite. (Prediction with this
    network, the same as ModDrop+'s, is tested above; nnU-Net's final validation is skipped to save CI time.)"""
    trainer = "nnUNetTrainerModDropPlusPlus_p05_8epochs_3it_1valit_w03"  # built on demand: no module lists it
    nnunet_workspace.run(nnunet_workspace.train_command(trainer), {"NNUNET_EXT_FINAL_VALIDATION": "0"})
    fold = os.path.join(nnunet_workspace.results_folder(trainer), "fold_0")
    log = open(sorted(glob.glob(os.path.join(fold, "training_log_*.txt")))[-1]).read()
    terms = [float(v) for v in re.findall(r"co-training: mean ssim dissimilarity ([-0-9.naninf]+) \(weight 0\.3\)",
                                         log)]
    assert len(terms) == 8 and all(math.isfinite(t) and 0 <= t <= 2 for t in terms) and max(terms) > 0
    train_losses = [float(v) for v in re.findall(r"train_loss ([-0-9.naninf]+)", log)]
    assert len(train_losses) == 8 and all(math.isfinite(v) for v in train_losses)
    checkpoint = torch.load(os.path.join(fold, "checkpoint_final.pth"), weights_only=False, map_location="cpu")
    assert checkpoint["trainer_name"] == trainer and checkpoint["current_epoch"] == 8
    assert any("controller" in k for k in checkpoint["network_weights"])
    assert all(torch.isfinite(v).all() for v in checkpoint["network_weights"].values() if v.is_floating_point())
    settings = json.load(open(os.path.join(fold, "nnunet_ext_settings.json")))["settings"]
    assert settings["cotraining"] == {"weight": 0.3, "similarity": "ssim"}
