"""Inception preprocessing in tf.data (host side), deterministic given a per-example seed.

Training (TF-slim's inception_preprocessing): a distorted bounding-box crop covering 5%-100% of the
image with aspect ratio 3/4-4/3, fused with JPEG decoding so only the crop is decoded; a random
horizontal flip; optional colour distortion; a bilinear resize to the model's size. Evaluation: the
central 87.5% crop, bilinear resize. Images leave the host as uint8; the train step scales them to
[-1, 1] on the device. Every random choice uses stateless ops seeded per example, so the stream is a
pure function of (seed, example position) and a resumed run sees the same pixels.
"""

from __future__ import annotations

from inception_jax import tf_import

tf = tf_import.tensorflow()


AREA_RANGE = (0.05, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MIN_OBJECT_COVERED = 0.1
MAX_ATTEMPTS = 10
EVAL_CROP_FRACTION = 0.875


def image_shape(encoded: tf.Tensor) -> tf.Tensor:
  """[height, width, channels] of an encoded JPEG or PNG, reading only its header when JPEG."""
  return tf.cond(tf.io.is_jpeg(encoded), lambda: tf.image.extract_jpeg_shape(encoded),
                 lambda: tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False)))


def distorted_crop_window(shape: tf.Tensor, seed: tf.Tensor,
                          min_area: float = AREA_RANGE[0]) -> tuple[tf.Tensor, tf.Tensor]:
  """(offset [y, x], size [h, w]) of TF-slim's distorted bounding box; the whole image on
  failure."""
  whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=whole_image, seed=seed,
      min_object_covered=min(MIN_OBJECT_COVERED, min_area), aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=(min_area, AREA_RANGE[1]), max_attempts=MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return begin[:2], size[:2]


def central_crop_window(shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(offset, size) of the central 87.5% of the image, as TF-slim's eval preprocessing."""
  hw = tf.cast(shape[:2], tf.float32)
  size = tf.cast(tf.math.round(hw * EVAL_CROP_FRACTION), tf.int32)
  return (shape[:2] - size) // 2, size


def decode_crop(encoded: tf.Tensor, offset: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """Decodes only the window of a JPEG (fused), or decodes then slices any other format."""
  window = tf.concat([offset, size], axis=0)

  def other():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [3]], 0))

  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3), other)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  image = tf.image.resize(image, (size, size), method='bilinear')
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def distort_color(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Brightness, saturation, hue and contrast jitter (TF-slim's colour distortion), uint8 ->
  uint8."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  x = tf.image.convert_image_dtype(image, tf.float32)
  x = tf.image.stateless_random_brightness(x, 32.0 / 255.0, seeds[0])
  x = tf.image.stateless_random_saturation(x, 0.5, 1.5, seeds[1])
  x = tf.image.stateless_random_hue(x, 0.2, seeds[2])
  x = tf.image.stateless_random_contrast(x, 0.5, 1.5, seeds[3])
  return tf.image.convert_image_dtype(tf.clip_by_value(x, 0.0, 1.0), tf.uint8, saturate=True)


def train_image(encoded: tf.Tensor, seed: tf.Tensor, size: int, color: bool = False,
                min_area: float = AREA_RANGE[0]) -> tf.Tensor:
  """An encoded image -> a uint8 [size, size, 3] training crop covering at least `min_area`."""
  crop_seed, flip_seed, color_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  offset, crop = distorted_crop_window(image_shape(encoded), crop_seed, min_area)
  image = resize(decode_crop(encoded, offset, crop), size)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return distort_color(image, color_seed) if color else image


def eval_image(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """An encoded image -> a uint8 [size, size, 3] central crop."""
  offset, crop = central_crop_window(image_shape(encoded))
  return resize(decode_crop(encoded, offset, crop), size)
