"""What every chapter shares: the papermill runner, image selection, figures in one style."""
