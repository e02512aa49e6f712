"""Self-Flow: dual-timestep scheduling + self-distillation from the EMA teacher (paper Sections 3.3-3.4).

One training step (Eqs. 4-7):

1. draw t, s ~ p(t) i.i.d. (unsorted), a token mask M with ratio R_M, per-token tau (Eq. 4), one
   noise eps, and the student input x_tau (Eq. 5);
2. student forward on x_tau; keep the hidden state after block l = round(0.3 D);
3. teacher (EMA weights, no grad) forward on x_{tau_min} -- every token at min(t, s), same x0 and
   eps, same (jointly dropped) labels -- stopped after block k = round(0.7 D);
4. L_rep = mean over tokens of 1 - cos(head(h_l), sg(z_k)) (Eq. 6, logged as "1 - cos" as the
   authors do; same gradient as -cos), L = L_gen + gamma L_rep with gamma = 0.8 (Eq. 7).

The head is Linear(D, 2D) - SiLU - Linear(2D, D), as in the released model's projector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..path import TimeDistribution, interpolate, velocity_target
from ..schedule import group_attention_mask, sample_dual_timesteps, teacher_time
from .base import LossOutput, Objective, at_least_fp32, drop_labels, resolve_layer, unwrap


class SelfFlowObjective(Objective):
    """Self-Flow with the paper's ablation switches.

    Args:
        hidden_size, depth: of the flow model (sizes the head, resolves the layers).
        gamma: weight of L_rep (Eq. 7).
        student_layer, teacher_layer: 1-indexed blocks; ``None`` = round(0.3 D), round(0.7 D).
        mask_ratio, mask_mode: R_M and ``bernoulli`` (paper) or ``exact`` (SRA code) masks.
        teacher_time: ``min`` (paper: teacher at tau_min) or ``same`` (teacher sees the student's tau).
        attention_separation: block attention between the two noise groups (SRA follow-up ablation).
        use_dts: False = one t per sample ("L_rep without DTS"; the teacher then sees t as well).
        use_rep: False = no teacher pass and no L_rep ("DTS without L_rep").
    """

    needs_teacher = True

    def __init__(
        self,
        time_dist: TimeDistribution,
        hidden_size: int,
        depth: int,
        label_dropout: float = 0.1,
        gamma: float = 0.8,
        student_layer: int | None = None,
        teacher_layer: int | None = None,
        mask_ratio: float = 0.25,
        mask_mode: str = "bernoulli",
        teacher_time: str = "min",
        attention_separation: bool = False,
        use_dts: bool = True,
        use_rep: bool = True,
    ):
        super().__init__(time_dist, label_dropout)
        self.student_layer = resolve_layer(student_layer, 0.3, depth, "method.objective.student_layer")
        self.teacher_layer = resolve_layer(teacher_layer, 0.7, depth, "method.objective.teacher_layer")
        if use_rep and self.student_layer >= self.teacher_layer:
            raise ValueError(
                f"method.objective.student_layer={self.student_layer} must be shallower than "
                f"teacher_layer={self.teacher_layer} (paper Eq. 6 requires l < k)"
            )
        if gamma < 0:
            raise ValueError(f"method.objective.gamma={gamma}: must be >= 0")
        if not 0.0 <= mask_ratio <= 0.5:
            raise ValueError(f"method.objective.mask_ratio={mask_ratio}: must be in [0, 0.5] (paper Eq. 4)")
        if teacher_time not in ("min", "same"):
            raise ValueError(f"method.objective.teacher_time={teacher_time!r}: must be 'min' or 'same'")
        self.gamma = gamma
        self.mask_ratio = mask_ratio
        self.mask_mode = mask_mode
        self.teacher_time = teacher_time
        self.attention_separation = attention_separation
        self.use_dts = use_dts
        self.use_rep = use_rep and gamma > 0
        self.needs_teacher = self.use_rep
        # Built only when used: DDP requires every trainable parameter to receive a gradient.
        self.head = nn.Sequential(
            nn.Linear(hidden_size, 2 * hidden_size), nn.SiLU(), nn.Linear(2 * hidden_size, hidden_size)
        ) if self.use_rep else None

    def forward(self, model, x0: Tensor, y: Tensor, coords: Tensor, teacher=None, raw=None) -> LossOutput:
        B, N, _ = x0.shape
        eps = self.rng.randn_like(x0)  # shared by student and teacher (Eq. 5, Section 3.4)
        y = drop_labels(y, self.label_dropout, unwrap(model).null_class, self.rng)  # shared too (issue #10)

        if self.use_dts:
            dts = sample_dual_timesteps(B, N, self.time_dist, self.mask_ratio, self.mask_mode, device=x0.device,
                                        rng=self.rng)
            t_student, group, tau = dts.levels, dts.group, dts.tau
        else:
            t_student = self.time_dist.sample((B,), device=x0.device, rng=self.rng)
            group, tau, dts = None, t_student, None
        attn_mask = group_attention_mask(group) if (self.attention_separation and group is not None) else None

        x_tau = interpolate(x0, eps, tau)
        features_at = (self.student_layer,) if self.use_rep else ()
        pred, feats = model(x_tau, t_student, y, coords, group=group, attn_mask=attn_mask,
                            features_at=features_at, return_features=True)
        loss_gen = self.generation_loss(pred, velocity_target(x0, eps))
        logs = {"loss_gen": loss_gen.detach()}
        if not self.use_rep:
            return LossOutput(loss_gen, logs)
        if teacher is None:
            raise RuntimeError("the Self-Flow objective needs the EMA teacher (pass teacher=ema.model)")

        # Teacher: EMA weights at the cleaner level, truncated after block k, no gradient.
        if dts is not None and self.teacher_time == "same":  # teacher sees the student's mixed input
            t_teacher, teacher_group, teacher_mask, tau_teacher = dts.levels, dts.group, attn_mask, dts.tau
        else:  # paper: every token at tau_min (= t itself without DTS)
            t_teacher = teacher_time(dts, "min") if dts is not None else t_student
            teacher_group, teacher_mask, tau_teacher = None, None, t_teacher
        with torch.no_grad():
            x_teacher = interpolate(x0, eps, tau_teacher)
            # Called through __call__ (not forward_features) so FSDP2's gather hooks on the root run.
            _, t_feats = teacher(x_teacher, t_teacher, y, coords, group=teacher_group, attn_mask=teacher_mask,
                                 features_at=(self.teacher_layer,), stop_after=self.teacher_layer,
                                 return_features=True)
        target = t_feats[self.teacher_layer].detach()  # (B, N, D)
        student = self.head(feats[self.student_layer])  # (B, N, D)
        cos = F.cosine_similarity(at_least_fp32(student), at_least_fp32(target), dim=-1)  # (B, N)
        loss_rep = (1.0 - cos).mean()  # Eq. 6 as mean(1 - cos)
        logs["loss_rep"] = loss_rep.detach()
        return LossOutput(loss_gen + self.gamma * loss_rep, logs)
