"""The GAN itself, pure PyTorch with no I/O beyond bundles: generator and discriminator (`models`),
one edge's local training (`train`), DiffAugment (`augment`), aggregation arithmetic
(`aggregate`), the federated strategies (`strategies`), weight bundles that cross nodes
(`bundle`), and drawing images from a generator (`sampling`)."""
