"""Video violence-detection trainer: frame sampling, VGG19 feature cache, BiLSTM-attention training."""

__version__ = "0.1.0"
