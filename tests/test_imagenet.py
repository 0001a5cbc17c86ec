"""The 1000 ImageNet classes shipped with the package."""

from inception_jax import imagenet


def test_imagenet_short_names():
  wnids = imagenet.wnids()
  assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
  names = imagenet.short_names()
  assert (names[0], names[1], names[207], names[999]) == ('tench', 'goldfish', 'golden retriever',
                                                          'toilet tissue')
  assert imagenet.short_names(background=True) == ['background', *names]
