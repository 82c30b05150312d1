"""The autoencoder whose 16-d latent space measures similarity for data grouping (SG, IG).

"Personalization of Deep Learning" uses a convolutional autoencoder on 32x32 images. Our
inputs are small (40 CGM readings, 16x16 synthetic writer images), so a dense autoencoder
on the flattened, standardised input serves both data sets with one module; what matters
for grouping is a 16-d latent in which nearby samples look alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tailorml.models.schedule import epochs
from tailorml.models.train import LabeledData, LoopPlugin, train

LATENT_DIM = 16


class AutoEncoder(nn.Module):
    def __init__(
        self,
        n_inputs: int,
        mean: torch.Tensor,
        scale: torch.Tensor,
        latent: int = LATENT_DIM,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("scale", scale.clone())
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, n_inputs)
        )

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the standardised input."""
        return self.decoder(self.encoder(self.standardise(x)))

    def encode(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        self.eval()
        with torch.no_grad():
            parts = [
                self.encoder(self.standardise(torch.as_tensor(x[i : i + batch_size])))
                for i in range(0, len(x), batch_size)
            ]
        return torch.cat(parts).numpy() if parts else np.empty((0, LATENT_DIM), np.float32)


class Reconstruction(LoopPlugin):
    """The autoencoder's batch loss: mean squared error on the standardised input."""

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor:
        return nn.functional.mse_loss(model(x), model.standardise(x))


def fit_autoencoder(
    x: np.ndarray,
    n_epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> AutoEncoder:
    """Train on `x` (n, ...) with the one training loop and a reconstruction objective."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = torch.as_tensor(flat.mean(axis=0), dtype=torch.float32)
    scale = torch.as_tensor(np.maximum(flat.std(axis=0), 1e-3), dtype=torch.float32)
    torch.manual_seed(seed)
    model = AutoEncoder(flat.shape[1], mean, scale)
    data = LabeledData.from_numpy(x.astype(np.float32), np.zeros(len(x), dtype=np.int64))
    train(
        model,
        {"general": data},
        epochs("general", len(x), batch_size, n_epochs, seed),
        learning_rate=learning_rate,
        plugins=[Reconstruction()],
        seed=seed,
    )
    return model
