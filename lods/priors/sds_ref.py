"""Reference SDS (LODS Eq. 6): g = w(t) (eps(z_t; y) - eps), no classifier-free guidance at all."""

from __future__ import annotations

from lods.priors.base import Prior


class SDSRef(Prior):
    def target(self, z_t, t, c, scale):
        return self.model.eps(z_t, t, c.cond)  # Eq. 6: the score the model was trained to predict
