"""Reading, preparing and writing sounds: audio files, corpora, SoundFonts, sustain loops."""
