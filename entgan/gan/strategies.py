"""Federated GAN strategies: what an edge does in a round, and what the cloud does with it.

The global state of a job is a dict of groups (see `entgan.gan.bundle`): `<type>/G` and `<type>/D`
for every data type, and `features` for the domain feature network.

- `entgan` (the proposal's train-stage flow): each edge trains its local D against its local G
  (a copy of the global G), with a proximal pull toward the library's D (the lifelong
  optimizer), and takes local G steps. The cloud averages the Ds and Gs (sample-weighted), then
  trains the global G against the aggregated D (`cloud_steps`, no real data needed); the new G
  goes out with the next round's global state.
  Why the cloud starts from the averaged local Gs rather than the old global G: training the
  old G for a whole round against one fixed, averaged D lets G exploit that D (checkerboards
  and a rising FID on the demo: docs/design.md); the local Gs carry the real-data signal.
- `fedgan` (Rasouli et al. 2020): each edge sends G and D; the cloud averages both.
- `centralized`: the baseline; one node trains every type on the pooled images.

Policy (who trains what, how many must answer) is separate from arithmetic (`entgan.gan.aggregate`).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from entgan.gan.aggregate import AggregationError, FedAvgSum, StateDict, aggregate, clip_updates
from entgan.gan.fastgan import LightDiscriminator, LightGenerator
from entgan.gan.models import Discriminator, FeatureNet, Generator
from entgan.gan.train import Recipe, train_features, train_generator, train_local
from entgan.job.spec import EvalSpec, TrainSpec

FEATURES = "features"
EMA = "G_ema"  # group `<type>/G_ema`: the per-step EMA of G, present when train.ema_decay is set
log = logging.getLogger(__name__)


@dataclass
class EdgeUpdate:
    """What one edge sends after a round: weights per group and how many images stand behind them."""

    edge: str
    groups: dict[str, StateDict]
    num_examples: dict[str, int]  # per data type, plus FEATURES
    losses: dict[str, dict[str, float]] = field(default_factory=dict)


def stable_seed(*parts: object) -> int:
    """A seed derived from `parts` that is the same in every process (unlike `hash`)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def new_generator(train: TrainSpec) -> Generator:
    """A fresh G of the job's architecture (`train.architecture`) and image channels."""
    if train.architecture == "light":
        return LightGenerator(train.latent_dim, train.width, train.image_size, channels=train.image_channels)
    return Generator(train.latent_dim, train.width, train.image_size, channels=train.image_channels)


def new_discriminator(train: TrainSpec) -> Discriminator:
    """A fresh D of the job's architecture and image channels, `train.d_width` wide (default `width`)."""
    width = train.d_width or train.width
    if train.architecture == "light":
        return LightDiscriminator(width, train.image_size, channels=train.image_channels)
    return Discriminator(width, train.image_size, spectral_norm=train.spectral_norm, channels=train.image_channels)


def training_device(train: TrainSpec, *, strict: bool = True) -> str:
    """The torch device this process trains on: train.device, 'auto' being CUDA when one is visible.

    `train.device: cuda` on a process without a GPU is an error at the edges (`strict`); the
    cloud's few G steps fall back to the CPU (its aggregation task asks for no GPU)."""
    if train.device == "cuda" and not torch.cuda.is_available() and not strict:
        return "cpu"
    if train.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but this process sees no GPU; request one for the "
                           "task (edges[].gpus) or set train.device: auto")
    if train.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return train.device


def describe_device(train: TrainSpec, *, strict: bool = True) -> str:
    """One line for the task log: which device trains, and with which precision."""
    device = training_device(train, strict=strict)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    amp = train.amp if device == "cuda" and train.amp != "off" else "float32"
    return f"training on {device} ({name}, {amp})"


def recipe_of(train: TrainSpec, *, strict: bool = True) -> Recipe:
    """The GAN steps' options from the job's train section (`strict`: see `training_device`)."""
    return Recipe(
        augment=tuple(p for p in train.augment.split(",") if p),
        loss=train.loss,
        r1_gamma=train.r1_gamma,
        ema_decay=train.ema_decay,
        device=training_device(train, strict=strict),
        amp=train.amp,
        d_lr_scale=train.d_lr_scale,
    )


def new_feature_net(num_classes: int, train: TrainSpec, evaluation: EvalSpec) -> FeatureNet:
    return FeatureNet(num_classes, evaluation.feature_dim, train.image_size, channels=train.image_channels)


def initial_state(
    data_types: list[str], train: TrainSpec, evaluation: EvalSpec
) -> dict[str, StateDict]:
    """Fresh, seeded weights for every type's G and D and for the feature network."""
    state: dict[str, StateDict] = {}
    for i, data_type in enumerate(sorted(data_types)):
        torch.manual_seed(train.seed * 1000 + i)
        state[f"{data_type}/G"] = new_generator(train).state_dict()
        state[f"{data_type}/D"] = new_discriminator(train).state_dict()
        if train.ema_decay is not None:
            start_ema_at_g(state, data_type)
    torch.manual_seed(train.seed)
    state[FEATURES] = new_feature_net(len(data_types), train, evaluation).state_dict()
    return state


def start_ema_at_g(state: dict[str, StateDict], data_type: str) -> None:
    """Set `<type>/G_ema` to a copy of `<type>/G`: where a type's EMA starts, whether G is fresh,
    its champion or a warm start's parent. The EMA G is what is evaluated and deployed, so one
    left elsewhere would stand for a G nobody trained."""
    state[f"{data_type}/{EMA}"] = {k: v.clone() for k, v in state[f"{data_type}/G"].items()}


def extend_feature_net(
    features: StateDict, old_types: list[str], new_types: list[str], train: TrainSpec, evaluation: EvalSpec
) -> StateDict:
    """The feature network for `new_types`: the learned body is kept, each known type keeps its
    row of the classifier head, a new type gets a freshly initialised row."""
    net = new_feature_net(len(new_types), train, evaluation)
    state = net.state_dict()
    for key, value in features.items():
        if not key.startswith("head."):
            state[key] = value.clone()
    for i, data_type in enumerate(new_types):
        if data_type in old_types:
            j = old_types.index(data_type)
            state["head.weight"][i] = features["head.weight"][j]
            state["head.bias"][i] = features["head.bias"][j]
    return state


def types_in(state: dict[str, StateDict]) -> list[str]:
    return sorted({g.split("/")[0] for g in state if g.endswith("/G")})


def load_generator(state: dict[str, StateDict], data_type: str, train: TrainSpec) -> Generator:
    """The generator to evaluate, sample from and deploy: the EMA G when the state has one."""
    return _load_generator_state(deployed_generator(state, data_type), train)


def deployed_generator(state: dict[str, StateDict], data_type: str) -> StateDict:
    """The G weights that stand for `data_type` outside training: `<type>/G_ema` if present."""
    return state.get(f"{data_type}/{EMA}", state[f"{data_type}/G"])


def deploy_groups(state: dict[str, StateDict], data_type: str) -> dict[str, StateDict]:
    """What the registry stores for a type: `<type>/G` (the EMA G when there is one) and `<type>/D`."""
    return {f"{data_type}/G": deployed_generator(state, data_type), f"{data_type}/D": state[f"{data_type}/D"]}


def _load_generator_state(state: StateDict, train: TrainSpec) -> Generator:
    g = new_generator(train)
    g.load_state_dict(state)
    return g


def _load_discriminator(state: StateDict, train: TrainSpec) -> Discriminator:
    d = new_discriminator(train)
    d.load_state_dict(state)
    return d


def load_feature_net(
    state: dict[str, StateDict], num_classes: int, train: TrainSpec, evaluation: EvalSpec
) -> FeatureNet:
    net = new_feature_net(num_classes, train, evaluation)
    net.load_state_dict(state[FEATURES])
    return net


def edge_round(
    edge: str,
    global_state: dict[str, StateDict],
    data: dict[str, torch.Tensor],
    all_types: list[str],
    train: TrainSpec,
    evaluation: EvalSpec,
    *,
    round_: int,
    on_type: Callable[[str], None] | None = None,
    on_step: Callable[[str, int, int, dict[str, float]], None] | None = None,
) -> EdgeUpdate:
    """One edge's work in one round, for every type it holds (`data`: type -> real images).
    `on_type(type)` is called as a type starts, `on_step(type, step, steps, losses)` after each step."""
    update = EdgeUpdate(edge=edge, groups={}, num_examples={})
    recipe = recipe_of(train)
    if data:
        log.info("edge %s: %s", edge, describe_device(train))
    for i, (data_type, images) in enumerate(sorted(data.items())):
        if on_type:
            on_type(data_type)
        generator = _load_generator_state(global_state[f"{data_type}/G"], train)
        anchor = global_state[f"{data_type}/D"]
        discriminator = _load_discriminator(anchor, train)
        cpu_started = time.process_time()
        result = train_local(
            generator,
            discriminator,
            images,
            steps=train.local_steps,
            batch_size=train.batch_size,
            lr=train.lr,
            mu=train.mu if train.strategy == "entgan" else 0.0,  # the lifelong optimizer
            anchor=anchor,
            seed=stable_seed(train.seed, edge, data_type, round_),
            progress=(lambda step, steps, losses, t=data_type: on_step(t, step, steps, losses)) if on_step else None,
            recipe=recipe,
            # Round 1 starts the EMA from the G it trains (a warm start replaces G, not the EMA).
            ema_start=global_state.get(f"{data_type}/{EMA}") if round_ > 1 else None,
        )
        nets = {"G": result.generator, "D": result.discriminator}
        if result.generator_ema is not None:
            nets[EMA] = result.generator_ema
        update.groups.update({f"{data_type}/{net}": state for net, state in nets.items()})
        update.num_examples[data_type] = result.num_examples
        # what the training cost: CPU seconds of this process (all its threads) and D+G steps
        update.losses[data_type] = {"d_loss": result.d_loss, "g_loss": result.g_loss,
                                    "train_cpu_s": time.process_time() - cpu_started, "steps": train.local_steps}

    if data:  # the domain feature network learns from the same local images
        types = sorted(data)
        images = torch.cat([data[t] for t in types])
        labels = torch.cat([torch.full((data[t].shape[0],), all_types.index(t)) for t in types])
        net = load_feature_net(global_state, len(all_types), train, evaluation)
        state, loss = train_features(
            net,
            images,
            labels,
            steps=evaluation.feature_steps,
            batch_size=evaluation.batch_size,  # the evaluator's batch, not the GAN's
            seed=stable_seed(train.seed, edge, FEATURES, round_),
        )
        update.groups[FEATURES] = state
        update.num_examples[FEATURES] = int(images.shape[0])
        update.losses[FEATURES] = {"loss": loss}
    return update


def cloud_round(
    global_state: dict[str, StateDict],
    updates: list[EdgeUpdate],
    train: TrainSpec,
    *,
    round_: int,
) -> tuple[dict[str, StateDict], dict[str, float]]:
    """Aggregate one round's edge updates into the next global state.

    A type no edge trained this round keeps its weights. Returns the new state and metrics.
    """
    cloud = CloudRound(global_state, train, round_=round_)
    for update in updates:
        cloud.add(update)
    return cloud.finish()


class CloudRound:
    """The cloud's round, fed one edge update at a time (`add`), then `finish`ed.

    With FedAvg (no clipping, or a fixed clip norm) each update is folded into running
    per-network means as it arrives (`entgan.gan.aggregate.FedAvgSum`), so the caller may drop it:
    the cloud holds the means and one update, not all of them. The median, the trimmed mean and
    median-norm clipping need every update at once; for those the updates are kept until `finish`.
    """

    def __init__(self, global_state: dict[str, StateDict], train: TrainSpec, *, round_: int) -> None:
        self.global_state, self.train, self.round_ = global_state, train, round_
        self.streaming = train.aggregation == "fedavg" and not isinstance(train.clip_norm, str)
        self.recipe = recipe_of(train, strict=False) if train.strategy == "entgan" else None
        if self.recipe is not None:
            log.info("cloud: global G steps %s", describe_device(train, strict=False))
        self.contributing = 0
        self._sums: dict[str, FedAvgSum] = {}
        self._kept: dict[str, list[tuple[StateDict, int]]] = {}
        self._senders: dict[str, list[tuple[int, dict[str, float]]]] = {}  # type -> (examples, losses)

    def add(self, update: EdgeUpdate) -> None:
        if not update.num_examples:
            return
        self.contributing += 1
        for data_type in types_in(self.global_state):
            if data_type in update.num_examples:
                n = update.num_examples[data_type]
                self._senders.setdefault(data_type, []).append((n, update.losses[data_type]))
                for net in ("D", "G", EMA):
                    if f"{data_type}/{net}" in update.groups:
                        self._fold(f"{data_type}/{net}", update.groups[f"{data_type}/{net}"], n)
        if FEATURES in update.groups:
            self._fold(FEATURES, update.groups[FEATURES], update.num_examples[FEATURES])

    def _fold(self, group: str, state: StateDict, n: int) -> None:
        if not self.streaming:
            self._kept.setdefault(group, []).append((state, n))
            return
        if self.train.clip_norm is not None:  # a fixed bound clips each update on its own
            (state, n), = clip_updates([(state, n)], self.global_state[group], self.train.clip_norm)[0]
        self._sums.setdefault(group, FedAvgSum()).add(state, n)

    def _has(self, group: str) -> bool:
        return group in self._sums or group in self._kept

    def _combined(self, group: str) -> StateDict:
        """One network's aggregation with the job's method (train.aggregation, clip_norm, trim_fraction)."""
        if self.streaming:
            return self._sums[group].result()
        return aggregate(self._kept[group], self.global_state[group], method=self.train.aggregation,
                         clip_norm=self.train.clip_norm, trim_fraction=self.train.trim_fraction)

    def finish(self) -> tuple[dict[str, StateDict], dict[str, float]]:
        train, round_ = self.train, self.round_
        if self.contributing < train.min_edges:
            raise AggregationError(
                f"round {round_}: {self.contributing} edge(s) sent updates, fewer than "
                f"train.min_edges={train.min_edges}; no new global state"
            )
        new_state = dict(self.global_state)
        metrics: dict[str, float] = {}
        for i, data_type in enumerate(types_in(self.global_state)):
            senders = self._senders.get(data_type)
            if not senders:
                continue
            d_state = self._combined(f"{data_type}/D")
            new_state[f"{data_type}/D"] = d_state
            g_state = self._combined(f"{data_type}/G")
            ema_state = self._combined(f"{data_type}/{EMA}") if self._has(f"{data_type}/{EMA}") else None
            if train.strategy == "entgan":  # the global G update: G against the aggregated D, no real data
                g_state, g_loss, ema_state = train_generator(
                    _load_generator_state(g_state, train),
                    _load_discriminator(d_state, train),
                    steps=train.cloud_steps,
                    batch_size=train.batch_size,
                    lr=train.lr,
                    seed=train.seed * 7919 + round_ * 31 + i,
                    recipe=self.recipe,
                    ema_start=ema_state,  # the edges' EMAs, averaged, go on over the cloud's G steps
                )
                metrics[f"{data_type}.cloud_g_loss"] = g_loss
            new_state[f"{data_type}/G"] = g_state
            if ema_state is not None:
                new_state[f"{data_type}/{EMA}"] = ema_state
            metrics[f"{data_type}.edges"] = float(len(senders))
            metrics[f"{data_type}.num_examples"] = float(sum(n for n, _ in senders))
            for key in ("d_loss", "g_loss"):
                metrics[f"{data_type}.edge_{key}"] = sum(losses[key] for _, losses in senders) / len(senders)
        if self._has(FEATURES):
            new_state[FEATURES] = self._combined(FEATURES)
        return new_state, metrics


def train_centralized(
    data: dict[str, torch.Tensor], train: TrainSpec, *, steps: int | None = None
) -> dict[str, StateDict]:
    """The baseline: every type trained on all its images pooled on one node."""
    state: dict[str, StateDict] = {}
    for i, (data_type, images) in enumerate(sorted(data.items())):
        torch.manual_seed(train.seed * 1000 + i)
        result = train_local(
            new_generator(train),
            new_discriminator(train),
            images,
            steps=steps or train.rounds * train.local_steps,
            batch_size=train.batch_size,
            lr=train.lr,
            seed=train.seed + i,
            recipe=recipe_of(train),
        )
        state[f"{data_type}/G"] = result.generator
        state[f"{data_type}/D"] = result.discriminator
        if result.generator_ema is not None:
            state[f"{data_type}/{EMA}"] = result.generator_ema
    return state
