"""Every choice a config, a reader or a network offers, as a ``StrEnum``: parsing an unknown value raises
``ValueError`` naming the allowed ones. The bottom of the house: imports nothing of diffuseg."""

from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    """A string choice; parsing an unknown value raises ``ValueError`` naming the allowed ones."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, value: str | StrEnum) -> StrEnum:
        try:
            return cls(str(value).lower().replace("-", "_"))
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"{value!r} is not one of: {allowed}") from None


class Resize(StrEnum):
    """How an image of any shape becomes the model's S x S square (``data.transforms.resize_pair``)."""

    STRETCH = "stretch"  # both sides to S: the aspect ratio is not kept
    PAD = "pad"  # the longer side to S, the shorter padded symmetrically (image zeros, mask background)
    SPACING = "spacing"  # resampled to data.spacing (mm per pixel), then padded as pad pads


class Normalize(StrEnum):
    """How image intensities become the network's input (``data.formats.files``)."""

    PER_IMAGE = "per_image"  # each file's 0.5/99.5 percentiles to [0, 1] (uint8: / 255)
    CT = "ct"  # nnU-Net's CT normalisation with the training set's foreground statistics


class Method(StrEnum):
    DIFFUSION = "diffusion"
    DETERMINISTIC = "deterministic"
    PROBUNET = "probunet"
    PHISEG = "phiseg"
    ANCHORED = "anchored"  # a deterministic trunk and a diffusion head on its residual (docs/training.md)
    SSN = "ssn"  # Stochastic Segmentation Networks: a low-rank Gaussian over the logits (docs/baselines.md)


class AnchorForm(StrEnum):
    """How anchored diffusion uses the trunk's prior mu: one process on the residual r_0 = y_0 - mu."""

    RESIDUAL = "residual"  # the head sees alpha r_0 + sigma eps, predicts r_0's target (CorrDiff; PGRD)
    MEAN_SHIFT = "mean_shift"  # the head sees y_t = that + mu, ending at N(mu, I), predicts y_0's (CARD; HiDiff)


class SegWeighting(StrEnum):
    """How anchored diffusion weights the head's segmentation loss over the drawn times."""

    UNIFORM = "uniform"  # every time alike
    SIGNAL = "signal"  # alpha_t^2, the signal's share of x_t's variance (as recipes.aux_loss weights x_hat)


class ScheduleKind(StrEnum):
    LINEAR = "linear"  # discrete DDPM betas (Ho et al. 2020)
    COSINE = "cosine"  # discrete cosine betas (Nichol & Dhariwal 2021)
    CONTINUOUS_COSINE = "continuous_cosine"  # VP cosine logSNR (the ambiguity paper, eq. 4)
    CONTINUOUS_LINEAR = "continuous_linear"  # VP linear beta(t) (Song et al. 2021)


class PredictionType(StrEnum):
    EPS = "eps"
    X = "x"
    V = "v"
    LOGITS = "logits"  # per-channel logits of x_0, trained with Dice + CE (Fu et al. 2023, arXiv:2303.06040)


class RecycleStart(StrEnum):
    """Where recycling's gradient-free first pass starts (``diffusion.recipes``)."""

    TRUTH = "truth"  # the ground truth noised to t = 1
    NOISE = "noise"  # pure noise, as the sampler's first step (Fu et al. 2023, ImgX-DiffSeg)


class Weighting(StrEnum):
    SNR = "snr"
    TRUNCATED_SNR = "truncated_snr"
    SNR_PLUS_ONE = "snr_plus_one"
    UNIFORM = "uniform"
    SIGMOID = "sigmoid"


class TimeSampler(StrEnum):
    UNIFORM = "uniform"
    LOW_DISCREPANCY = "low_discrepancy"


class SamplerKind(StrEnum):
    DDPM = "ddpm"
    DDIM = "ddim"
    DPM_SOLVER = "dpm_solver"


class Spacing(StrEnum):
    LINEAR = "linear"  # sampling times evenly spaced in t
    QUADRATIC = "quadratic"  # t_k ~ (k / S)^2: denser near the data (Song et al. 2021, DDIM, App. D.2)


class DDPMVariance(StrEnum):
    POSTERIOR = "posterior"  # beta-tilde, Ho et al. 2020
    BETA = "beta"  # the larger choice sigma_t^2 = beta_t


class Fusion(StrEnum):
    STAPLE = "staple"
    MEAN = "mean"
    VOTE = "vote"


class Uncertainty(StrEnum):
    DISAGREEMENT = "disagreement"  # share of members whose label differs from the fused mask's
    VARIANCE = "variance"
    ENTROPY = "entropy"


class Layout(StrEnum):
    AUTO = "auto"
    LIDC = "lidc"
    BRATS = "brats"
    NNUNET = "nnunet"
    MULTI = "multi"
    CLASSES = "classes"
    SSL4MIS = "ssl4mis"
    PAIRED = "paired"
    NIFTI = "nifti"
    IMAGES = "images"
    LABELS = "labels"


class SplitKind(StrEnum):
    """Where a split comes from: patient lists named in the config or found beside the data, the dataset's own
    case lists or folds, a k-fold split, or a seed."""

    CONFIG = "config"
    ROOT_LISTS = "root_lists"
    PARENT_LISTS = "parent_lists"
    DATASET_LISTS = "dataset_lists"  # SSL4MIS train.list / val.list
    SPLITS_FILE = "splits_file"  # nnU-Net's splits_final.json, one fold of it
    KFOLD = "kfold"  # one fold of a seeded k-fold split by patient
    SEED = "seed"


class Padding(StrEnum):
    """What a 3x3 convolution reads beyond the border of its map.

    ``zeros`` (the papers' networks, Nichol & Dhariwal 2021): zeros. A corner pixel reads 5 of its 9 taps
    from them and an edge pixel 3, at every layer, so the network computes something else there, and what it
    computes at the 4 corner pixels of an image is learnt from those pixels alone. A short-trained model gets
    them wrong, putting foreground in a corner pixel of some samples (docs/networks.md, "Padding and the corner
    pixels"). ``partial``: partial-convolution padding (Liu et al. 2018, arXiv:1811.11718),
    ``PartialPadConv2d``: zeros, with the sum over the taps that fall inside rescaled to all 9, so border pixels
    respond on the interior's scale. Same parameters and state dict.
    """

    ZEROS = "zeros"
    PARTIAL = "partial"


class DownsampleKind(StrEnum):
    """How a level halves its resolution.

    ``conv``: 3x3 convolution with stride 2 and padding 1 (Nichol & Dhariwal 2021, the papers' UNets). On an
    even size its outputs sit on input pixels 0, 2, ..., H-2: the top and left borders are read through zero
    padding, the bottom and right ones never, and each level shifts the map half a pixel towards the top-left,
    so the four corners are not treated alike. ``centred``: 2x2 average pooling, then a 3x3 convolution with
    padding 1: outputs sit at the centre of each 2x2 cell, the map commutes with flips and 90-degree turns
    (for flip-symmetric kernels), with the same parameter count and a similar cost.
    """

    CONV = "conv"
    CENTRED = "centred"


class LatentKind(StrEnum):
    AA = "aa"
    AA_MIX = "aa_mix"
    FC = "fc"
    FC_MIX = "fc_mix"

    @property
    def is_mixture(self) -> bool:
        return self in (LatentKind.AA_MIX, LatentKind.FC_MIX)

    @property
    def full_covariance(self) -> bool:
        return self in (LatentKind.FC, LatentKind.FC_MIX)


class StapleInit(StrEnum):
    MEAN = "mean"
    VOTE = "vote"


class ClassAverage(StrEnum):
    PRESENT = "present"
    ALL = "all"
