"""Configurations of the released WF-VAE models (random weights until loaded)."""
from wfvae.models.encoder_decoder import WFVAEConfig

_RELEASE = dict(norm_type="layernorm", t_interpolation="trilinear", use_attention=True, connect_res_layer_num=1,
                encoder_num_resblocks=2, decoder_num_resblocks=2)

WFVAE_L_16CHN = WFVAEConfig(base_channels=192, latent_dim=16, encoder_energy_flow_hidden_size=128,
                            decoder_energy_flow_hidden_size=128, **_RELEASE)
"""WF-VAE-L, 16 latent channels, 317M parameters (PKU-YuanGroup WF-VAE-L-16Chn)."""

WFVAE_S_8CHN = WFVAEConfig(base_channels=128, latent_dim=8, encoder_energy_flow_hidden_size=128,
                           decoder_energy_flow_hidden_size=128, **_RELEASE)
"""WF-VAE-S, 8 latent channels, 147M parameters (the Open-Sora Plan v1.3 VAE)."""
