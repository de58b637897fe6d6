"""Data: reading reviews (xlsx, csv, txt, stdin), the IMDB splits and their download, labels, cutting reviews
to maxlen tokens, and batches of reviews of similar length. No TensorFlow here."""
