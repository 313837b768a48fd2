"""Sound ⇄ the model's features: STFT and phase retrieval, the feature codec, the IF option."""
