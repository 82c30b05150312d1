"""C99 code for a quantized alert model: `generate_c` and `generate_header` are pure
functions of the model (emlearn's shape), `save_c` writes them.

What the code promises a firmware engineer: no malloc, no floating point, weights `const`
(flash), and the safe call `tailorml_alert(readings, result, work)` (no decision for a gap,
the urgent-low floor, readings clamped to the sensor range; reentrant: the caller gives the
work memory, sized here) beside `tailorml_predict(readings, logits)`, the model alone on one
static arena, which returns the decided class. Activations are laid
out channels-last with the convolution's padding rows materialised (filled with the zero
point), so every output is one contiguous int8 dot product — the shape CMSIS-NN uses, and
the one the Cortex-M4's dual 16-bit multiply-accumulate (SMLAD) speeds up, reached through
the ACLE intrinsics of <arm_acle.h> (no inline assembly). The input zero
point is folded into the bias (sum w * (q - z) = sum w * q - z * sum w), exactly, so the
results are the integer reference's bit for bit (`tailorml.deploy.int8.quantize`).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailorml import __version__
from tailorml.deploy.int8.device_rules import MISSING, SENSOR_MAX_MGDL, SENSOR_MIN_MGDL
from tailorml.deploy.int8.quantize import (
    DECISION_FRACTION_BITS,
    DECISION_TABLE_SIZE,
    QuantizedModel,
)
from tailorml.errors import DeployError
from tailorml.io import atomic_write_text
from tailorml.models.cnn import SmallCNN, count_parameters

HEADER_NAME = "tailorml_model.h"
SOURCE_NAME = "tailorml_model.c"


@dataclass(frozen=True)
class Buffer:
    """One activation buffer: `rows` x `channels` int8, `pad` zero-point rows each side."""

    rows: int
    channels: int
    pad: int

    @property
    def size(self) -> int:
        return (self.rows + 2 * self.pad) * self.channels


def _buffers(model: QuantizedModel) -> list[Buffer]:
    """The input buffer of each layer (channels-last, padded for a convolution)."""
    buffers, rows, channels = [], model.window, model.channels
    for layer in model.layers:
        if layer.kind == "conv1d":
            buffers.append(Buffer(rows, channels, layer.padding))
            rows //= layer.pool
        else:
            buffers.append(Buffer(1, rows * channels, 0))
            rows = 1
        channels = layer.weight.shape[0]
    return buffers


def _even(count: int) -> int:
    return count + count % 2


def _shifted_copy(layer, buffer: Buffer) -> bool:
    """A convolution of one input channel reads its second row one int16 after the first,
    off a word: it keeps a copy of its input shifted by one value after the input (at the
    next word) and reads the second row there, so that both rows are read in pairs."""
    return layer.kind == "conv1d" and buffer.channels == 1


def arena_slot(model: QuantizedModel) -> int:
    """int16 values per arena slot: the largest layer input buffer (twice over for one
    with a shifted copy), rounded up to an even count so that the second slot starts on a
    word as the first does."""
    needs = [
        2 * _even(buffer.size) if _shifted_copy(layer, buffer) else buffer.size
        for layer, buffer in zip(model.layers, _buffers(model), strict=True)
    ]
    return _even(max(needs))


def arena_bytes(model: QuantizedModel) -> int:
    """Two int16 slots: layer i reads slot i % 2 and writes the other."""
    return 2 * 2 * arena_slot(model)


def _device_weights(model: QuantizedModel, index: int, buffer: Buffer) -> np.ndarray:
    """Weights in the order the device reads them: conv (out, kernel, in); a linear layer
    after a convolution takes channels-last rows, so torch's (c, t) flattening is permuted."""
    layer = model.layers[index]
    if layer.kind == "conv1d":
        return layer.weight.transpose(0, 2, 1).reshape(layer.weight.shape[0], -1)
    previous = model.layers[index - 1] if index else None
    if previous is not None and previous.kind == "conv1d":
        channels = previous.weight.shape[0]
        rows = buffer.channels // channels
        by_row = layer.weight.reshape(-1, channels, rows).transpose(0, 2, 1)
        return by_row.reshape(len(layer.weight), -1)
    return layer.weight


def _simd_order(weights: np.ndarray) -> np.ndarray:
    """Each full group of four weights of a row stored as w0 w2 w1 w3 (see the kernels)."""
    ordered = weights.copy()
    groups = weights.shape[1] // 4 * 4
    blocks = ordered[:, :groups].reshape(len(weights), -1, 4)
    ordered[:, :groups] = blocks[:, :, [0, 2, 1, 3]].reshape(len(weights), -1)
    return ordered


def pair_stride(depth: int) -> int:
    """Bytes of one pair of weight rows in flash: two rows, padded to a whole word."""
    return (2 * depth + 3) // 4 * 4


def _paired(weights: np.ndarray) -> np.ndarray:
    """The weights as the kernels read them: output rows in pairs (an odd last row paired
    with itself), each pair one block of `pair_stride` bytes: for every full group of four
    inputs the first row's four weights then the second's (in the SIMD order), then the
    rows' last depth % 4 weights, first row then second, then zeros to a whole word. So the
    kernels walk one pointer through a pair and every group is a word-aligned word."""
    rows, depth = weights.shape
    ordered = _simd_order(weights)
    full = depth // 4 * 4
    stride = pair_stride(depth)
    blocks = np.zeros(((rows + 1) // 2, stride), dtype=np.int8)
    for pair in range(len(blocks)):
        first, second = ordered[2 * pair], ordered[min(2 * pair + 1, rows - 1)]
        groups = np.stack(
            [first[:full].reshape(-1, 4), second[:full].reshape(-1, 4)], axis=1
        ).ravel()
        block = np.concatenate([groups, first[full:], second[full:]])
        blocks[pair, : len(block)] = block
    return blocks.ravel()


def _array(c_type: str, name: str, values: np.ndarray, per_line: int = 16) -> str:
    flat = [str(int(v)) for v in np.asarray(values).ravel()]
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {c_type} {name}[{len(flat)}] = {{\n    {body}\n}};\n"


def _words(name: str, values: np.ndarray, per_line: int = 8) -> str:
    """int8 values four to a uint32_t word, byte k of a word in bits 8k to 8k + 7."""
    octets = np.asarray(values, dtype=np.int8).view(np.uint8).reshape(-1, 4).astype(np.uint32)
    words = octets[:, 0] | octets[:, 1] << 8 | octets[:, 2] << 16 | octets[:, 3] << 24
    flat = [f"0x{int(word):08X}u" for word in words]
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(lines)
    return f"static const uint32_t {name}[{len(flat)}] = {{\n    {body}\n}};\n"


def _identifier(name: str) -> str:
    identifier = re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    if not identifier or identifier[0].isdigit():
        identifier = "C_" + identifier
    return identifier


def _require_cgm_only(model: QuantizedModel) -> None:
    channels = tuple(model.policy.channels)
    if channels != ("cgm",):
        raise DeployError(
            f"the device API reads CGM in mg/dL only; this model reads channels "
            f'{", ".join(channels)} — train it with task.channels = ["cgm"] to deploy it'
        )


def generate_header(model: QuantizedModel) -> str:
    """The header: what the model reads, its classes and alert policy, and the one call."""
    _require_cgm_only(model)
    policy = model.policy
    class_names = [_identifier(name) for name in policy.classes]
    if len(set(class_names)) != len(class_names):
        raise DeployError(f"class names {policy.classes} collide as C identifiers")
    classes = "\n".join(
        f"#define TAILORML_CLASS_{name} {index}" for index, name in enumerate(class_names)
    )
    threshold_ppm = round(policy.threshold * 1_000_000)
    fingerprint = model_fingerprint(model)
    return f"""{_banner(fingerprint)}
/* Input: the last {model.window} CGM readings in mg/dL, oldest first, one every
 * {policy.sample_minutes} minutes ({policy.window_minutes} min); TAILORML_MISSING where the
 * sensor delivered none. Call tailorml_alert: it applies the rules no model may break (a gap
 * is no decision, an urgent low alarms whatever the model says). The alert class is decided
 * when its probability reaches the threshold below. Every constant here is the one the code
 * uses: the source refuses to compile against a header whose model constants differ. */
#ifndef TAILORML_MODEL_H
#define TAILORML_MODEL_H

#include <stdint.h>

#define TAILORML_MODEL_SHA256 "{fingerprint}" /* of the generated model code */
#define TAILORML_GENERATOR "tailorml {__version__}"

#define TAILORML_CHANNELS {model.channels}
#define TAILORML_WINDOW {model.window}
#define TAILORML_SAMPLE_MINUTES {policy.sample_minutes}
#define TAILORML_HORIZON_MINUTES {policy.horizon_minutes}
#define TAILORML_HYPO_MGDL {round(policy.hypo_mgdl)}
#define TAILORML_HYPER_MGDL {round(policy.hyper_mgdl)}
#define TAILORML_N_CLASSES {len(policy.classes)}
{classes}
#define TAILORML_ALERT_CLASS {policy.alert_index}
#define TAILORML_THRESHOLD_PPM {threshold_ppm} /* alert when P(alert class) >= this / 1e6 */
#define TAILORML_SNOOZE_MINUTES {policy.snooze_minutes}
#define TAILORML_ARENA_BYTES {arena_bytes(model)}
#define TAILORML_ARENA_SLOT {arena_slot(model)}
/* the last layer's inputs: int8 codes minus their zero point (real value = code x scale) */
#define TAILORML_FEATURES {model.layers[-1].weight.shape[1]}
#define TAILORML_FEATURE_ZERO_POINT {model.layers[-1].input_zero_point}

/* What a decision needs (docs/alerts.md, "Safe decisions"; the model's alert policy). */
#define TAILORML_MISSING ({MISSING}) /* a reading the sensor did not deliver */
#define TAILORML_SENSOR_MIN_MGDL {SENSOR_MIN_MGDL} /* readings are clamped to the sensor range */
#define TAILORML_SENSOR_MAX_MGDL {SENSOR_MAX_MGDL}
#define TAILORML_URGENT_LOW_MGDL {math.floor(policy.urgent_low_mgdl)} /* at or below: urgent */
#define TAILORML_URGENT_BELOW_MGDL {math.ceil(policy.hypo_mgdl)} /* below and falling: urgent */
#define TAILORML_STATUS_DECIDED 0 /* the model decided: see decided_class and margin */
#define TAILORML_STATUS_NO_DECISION 1 /* a reading of the window is missing: never an alert */
#define TAILORML_STATUS_URGENT_LOW 2 /* a low now: alarm at once, whatever the model says */

/* Word alignment for an array the model's SIMD kernel reads two int16 values at a time
 * (the features given to tailorml_head): `TAILORML_ALIGN int16_t features[...];`. Every
 * array of the model is word-aligned already (weights are uint32_t words, the work memory
 * a union with one). On a core that traps unaligned access (CCR.UNALIGN_TRP) build with
 * -mno-unaligned-access (GCC, clang): the compiler may otherwise merge two int16 stores
 * into one unaligned word store of its own. Define TAILORML_ALIGN before including this
 * header for a compiler not listed. */
#ifndef TAILORML_ALIGN
#if defined(__STDC_VERSION__) && (__STDC_VERSION__ >= 201112L)
#define TAILORML_ALIGN _Alignas(4)
#elif defined(__GNUC__)
#define TAILORML_ALIGN __attribute__((aligned(4)))
#elif defined(__ICCARM__)
#define TAILORML_ALIGN _Pragma("data_alignment=4")
#elif defined(__CC_ARM)
#define TAILORML_ALIGN __align(4)
#else
#error "tailorml_model.h: define TAILORML_ALIGN (4-byte alignment) for this compiler"
#endif
#endif

/* Work memory of one call to tailorml_alert (TAILORML_ARENA_BYTES): give each task or
 * interrupt that decides its own, and calls can run at the same time. A union with a word,
 * so that it is word-aligned wherever it is declared (the kernels read activations two
 * int16 values at a time). */
typedef union {{
    int16_t slots[2][TAILORML_ARENA_SLOT];
    uint32_t word_alignment;
}} tailorml_work;

typedef struct {{
    int32_t status; /* a TAILORML_STATUS_ value (also what tailorml_alert returns) */
    int32_t decided_class; /* the class; TAILORML_ALERT_CLASS when urgent; -1 undecided */
    int32_t margin; /* the model's distance from the threshold in 1/65536 of a logit
                       step: >= 0 decides the alert class; 0 when the model did not run */
    int16_t logits[TAILORML_N_CLASSES]; /* the model's logits; 0 when it did not run */
}} tailorml_result;

/* The safe call: a window with a TAILORML_MISSING reading gets no decision (unless the
 * last reading is an urgent low); CGM at or below TAILORML_URGENT_LOW_MGDL, or below
 * TAILORML_URGENT_BELOW_MGDL and lower than the reading before, is an urgent low; other
 * readings are clamped to the sensor range before the model. Returns result->status.
 * Reentrant: all it writes is `result` and the caller's `work`. */
int32_t tailorml_alert(const int16_t readings[TAILORML_WINDOW], tailorml_result *result,
                       tailorml_work *work);

/* The model alone, without the rules of tailorml_alert (a TAILORML_MISSING reading is read
 * as a value): decide from the TAILORML_WINDOW `readings` (CGM, oldest first).
 * Writes the int16 logits if `logits` is not NULL. Returns the class index. Not reentrant:
 * it uses one static arena. */
int32_t tailorml_predict(const int16_t readings[TAILORML_WINDOW],
                         int16_t logits[TAILORML_N_CLASSES]);

/* The same computation up to the last layer: its TAILORML_FEATURES inputs (what on-device
 * learning of the last layer trains on). */
void tailorml_features(const int16_t readings[TAILORML_WINDOW],
                       int16_t features[TAILORML_FEATURES]);

/* The int8 last layer on `features` (as tailorml_features wrote them; word-aligned, see
 * TAILORML_ALIGN) and the decision: tailorml_predict = tailorml_features then
 * tailorml_head, bit for bit. */
int32_t tailorml_head(const int16_t features[TAILORML_FEATURES],
                      int16_t logits[TAILORML_N_CLASSES]);

/* The alert policy on int16 logits (what tailorml_predict returns for them). */
int32_t tailorml_decide(const int16_t logits[TAILORML_N_CLASSES]);

#endif /* TAILORML_MODEL_H */
"""


_KERNELS = r"""
/* Fixed-point requantization: TFLite's MultiplyByQuantizedMultiplier (gemmlowp double
 * rounding), the same arithmetic as tailorml.deploy.int8.fixed_point. For a multiplier
 * >= 0 (all of ours: QuantizeMultiplier gives [2^30, 2^31) or 0), gemmlowp's
 * nudge-and-truncate high multiply equals rounding half up, (a*b + 2^30) >> 31 (CMSIS-NN's
 * arm_nn_doubling_high_mult_no_sat), and its one saturating case cannot occur. A right
 * shift of a negative value is arithmetic here, as on every Arm compiler (and as TFLite and
 * CMSIS-NN assume). */
static inline int32_t tm_high_mul(int32_t a, int32_t b) {
    const int64_t product = ((int64_t)a * (int64_t)b) + INT64_C(1073741824);
    return (int32_t)(product >> 31);
}

static inline int32_t tm_divide_pot(int32_t x, uint32_t exponent) {
    const uint32_t mask = (UINT32_C(1) << exponent) - 1u;
    const uint32_t low_bits = (uint32_t)x & mask;
    const uint32_t half = mask >> 1;
    const int32_t remainder = (int32_t)low_bits;
    const int32_t threshold = (x < 0) ? ((int32_t)half + 1) : (int32_t)half;
    const int32_t floor = x >> exponent;
    const int32_t rounded_up = floor + 1;
    return (remainder > threshold) ? rounded_up : floor;
}

static inline int32_t tm_requantize(int32_t x, int32_t multiplier, int32_t shift) {
    const int32_t negated = -shift;
    const uint32_t left = (shift > 0) ? (uint32_t)shift : 0u;
    const uint32_t right = (shift > 0) ? 0u : (uint32_t)negated;
    const uint32_t shifted = (uint32_t)x << left;
    return tm_divide_pot(tm_high_mul((int32_t)shifted, multiplier), right);
}

static inline int32_t tm_clamp(int32_t x, int32_t low, int32_t high) {
    return (x < low) ? low : ((x > high) ? high : x);
}

/* Activations live in int16 slots holding q - z (the int8 code minus its zero point, as
 * CMSIS-NN's im2col buffers do), so padding is 0 and no offset is added in the inner loop.
 * Weights are int8, four to a uint32_t word (byte k is bits 8k to 8k + 7, by value: no byte
 * order enters, and every word is aligned), laid out as the kernels walk them (the
 * generator's `_paired`): output rows in pairs, the two outputs one call computes; per group
 * of four inputs the first row's word then the second's, each stored as w0 w2 w1 w3 so that
 * SXTB16 yields the pairs (w0, w1) and (w2, w3) that meet the int16 input pairs in SMLAD;
 * then the last depth % 4 weights of each row; a pair ends on a whole word. The words of a
 * pair are read in order: what lets a compiler keep the four accumulators in registers.
 * tm_dot4_simd and tm_dot4_c return the four dot products of a pair of weight rows with two
 * input rows, tm_dot2 (a linear layer) those with one input row. */

/* The SIMD kernels are inlined into each layer's function, whose shape is constant there:
 * the compiler knows the trip count and unrolls the kernel's loop fully (clang: by the
 * pragma), so no call, no loop counter and no branch is left in it (real demo model, M4:
 * 199,425 conservative cycles with the kernels as calls, 160,216 inlined and unrolled). The
 * plain kernel stays a function of its own. Only hints: a compiler without them decides. */
#if defined(__GNUC__)
#define TM_NOINLINE __attribute__((noinline))
#define TM_INLINE inline __attribute__((always_inline))
#else
#define TM_NOINLINE
#define TM_INLINE inline
#endif

/* The low byte of a word as a signed value (written so that compilers emit one SXTB or
 * SBFX: flipping the sign bit then subtracting it is sign extension, defined for all). */
static inline int32_t tm_s8(uint32_t word) {
    const uint32_t flipped = (word & 0xFFu) ^ 0x80u;
    return (int32_t)flipped - 0x80;
}

/* Byte k of the words from w: the pair's last depth % 4 weights, first row then second. */
static inline int32_t tm_tail(const uint32_t *w, uint32_t k) {
    return tm_s8(w[k / 4u] >> (8u * (k % 4u)));
}

/* Plain C: the same pairs and 2x2 blocking, each weight word and input read once per four
 * products (input j of a group meets byte 0, 2, 1, 3 of the word: the SIMD order). */
@PLAIN_OPEN@static TM_NOINLINE void tm_dot4_c(const uint32_t *weights, const int16_t *row0,
                                  const int16_t *row1, int32_t n, int32_t acc[4]) {
    static const uint32_t shift[4] = {0u, 16u, 8u, 24u};
    const uint32_t *w = weights;
    const int16_t *x0 = row0;
    const int16_t *x1 = row1;
    const int32_t rest = n % 4;
    int32_t a00 = 0;
    int32_t a01 = 0;
    int32_t a10 = 0;
    int32_t a11 = 0;
    for (int32_t blocks = n / 4; blocks > 0; blocks--) {
        for (int32_t j = 0; j < 4; j++) {
            const int32_t u = tm_s8(w[0] >> shift[j]);
            const int32_t v = tm_s8(w[1] >> shift[j]);
            const int32_t x = x0[j];
            const int32_t y = x1[j];
            a00 += u * x;
            a01 += v * x;
            a10 += u * y;
            a11 += v * y;
        }
        w = &w[2];
        x0 = &x0[4];
        x1 = &x1[4];
    }
    for (int32_t i = 0; i < rest; i++) {
        const uint32_t first = (uint32_t)i;
        const uint32_t second = (uint32_t)rest + first;
        const int32_t u = tm_tail(w, first);
        const int32_t v = tm_tail(w, second);
        a00 += u * x0[i];
        a01 += v * x0[i];
        a10 += u * x1[i];
        a11 += v * x1[i];
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}
@PLAIN_CLOSE@
#if defined(__ARM_FEATURE_SIMD32)
/* The Cortex-M4/M7/M33 path: the ACLE intrinsics of <arm_acle.h> (GCC, clang, armclang,
 * IAR), which a compiler for a core with the 32-bit SIMD instructions (__ARM_FEATURE_SIMD32)
 * provides. No inline assembly. Two int16 inputs are read as one word, written as halfword
 * reads (no pointer cast: no aliasing assumption) that compilers combine into one LDR: the
 * caller passes word-aligned inputs only (the arena is, and a layer whose input rows would
 * not all be, odd channel counts, takes the plain path), and says so to GCC and clang, which
 * then combine them under -mno-unaligned-access too. */
#if defined(__GNUC__)
#define TM_WORD_ALIGNED(p) ((const int16_t *)__builtin_assume_aligned((p), 4))
#else
#define TM_WORD_ALIGNED(p) (p)
#endif

static inline int16x2_t tm_pair(const int16_t *p) {
    const uint32_t low = (uint16_t)p[0];
    const uint32_t high = (uint16_t)p[1];
    const uint32_t word = low | (high << 16u);
    return (int16x2_t)word;
}

/* A rotation by 8 (bytes 1 and 3 to 0 and 2), folded into the SXTB16 that reads it. */
static inline uint32_t tm_ror8(uint32_t word) {
    return (word >> 8u) | (word << 24u);
}

static TM_INLINE void tm_dot4_simd(const uint32_t *weights, const int16_t *row0,
                                   const int16_t *row1, int32_t n, int32_t acc[4]) {
    const uint32_t *w = weights;
    const int16_t *x0 = TM_WORD_ALIGNED(row0);
    const int16_t *x1 = TM_WORD_ALIGNED(row1);
    const int32_t rest = n % 4;
    int32_t a00 = 0;
    int32_t a01 = 0;
    int32_t a10 = 0;
    int32_t a11 = 0;
#if defined(__clang__)
#pragma clang loop unroll(full) /* n is the layer's constant: no counter, no branch */
#endif
    for (int32_t blocks = n / 4; blocks > 0; blocks--) {
        const uint32_t wa = w[0];
        const uint32_t wb = w[1];
        int16x2_t ta = __sxtb16((int8x4_t)wa);
        int16x2_t tb = __sxtb16((int8x4_t)wb);
        int16x2_t u = tm_pair(x0);
        int16x2_t v = tm_pair(x1);
        a00 = __smlad(ta, u, a00);
        a01 = __smlad(tb, u, a01);
        a10 = __smlad(ta, v, a10);
        a11 = __smlad(tb, v, a11);
        ta = __sxtb16((int8x4_t)tm_ror8(wa));
        tb = __sxtb16((int8x4_t)tm_ror8(wb));
        u = tm_pair(&x0[2]);
        v = tm_pair(&x1[2]);
        a00 = __smlad(ta, u, a00);
        a01 = __smlad(tb, u, a01);
        a10 = __smlad(ta, v, a10);
        a11 = __smlad(tb, v, a11);
        w = &w[2];
        x0 = &x0[4];
        x1 = &x1[4];
    }
    for (int32_t i = 0; i < rest; i++) {
        const uint32_t first = (uint32_t)i;
        const uint32_t second = (uint32_t)rest + first;
        const int32_t p = tm_tail(w, first);
        const int32_t q = tm_tail(w, second);
        a00 += p * x0[i];
        a01 += q * x0[i];
        a10 += p * x1[i];
        a11 += q * x1[i];
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

static TM_INLINE void tm_dot2(const uint32_t *weights, const int16_t *row, int32_t n,
                              int32_t acc[2]) {
    const uint32_t *w = weights;
    const int16_t *x0 = TM_WORD_ALIGNED(row);
    const int32_t rest = n % 4;
    int32_t a0 = 0;
    int32_t a1 = 0;
    for (int32_t blocks = n / 4; blocks > 0; blocks--) {
        const uint32_t wa = w[0];
        const uint32_t wb = w[1];
        const int16x2_t u = tm_pair(x0);
        const int16x2_t v = tm_pair(&x0[2]);
        a0 = __smlad(__sxtb16((int8x4_t)wa), u, a0);
        a1 = __smlad(__sxtb16((int8x4_t)wb), u, a1);
        a0 = __smlad(__sxtb16((int8x4_t)tm_ror8(wa)), v, a0);
        a1 = __smlad(__sxtb16((int8x4_t)tm_ror8(wb)), v, a1);
        w = &w[2];
        x0 = &x0[4];
    }
    for (int32_t i = 0; i < rest; i++) {
        const uint32_t first = (uint32_t)i;
        const uint32_t second = (uint32_t)rest + first;
        a0 += tm_tail(w, first) * x0[i];
        a1 += tm_tail(w, second) * x0[i];
    }
    acc[0] = a0;
    acc[1] = a1;
}
#else
/* Without the 32-bit SIMD instructions (Cortex-M0/M3, the host): plain C throughout. */
static void tm_dot2(const uint32_t *w, const int16_t *row, int32_t n, int32_t acc[2]) {
    int32_t four[4];
    tm_dot4_c(w, row, row, n, four);
    acc[0] = four[0];
    acc[1] = four[1];
}
#endif

static void tm_zero(int16_t *buffer, int32_t count) {
    for (int32_t i = 0; i < count; i++) {
        buffer[i] = 0;
    }
}

/* A layer's requantization of one output channel. The general form (`tm_requantize`, any
 * shift) or, where the generator proved it exact for every channel of the layer (a right
 * shift e >= 1 or a zero multiplier, and no int32 overflow for any input: see
 * `_fast_requantization`), the same two roundings in a few instructions: h = (x * m + 2^30)
 * >> 31 with the bias folded into x, then gemmlowp's rounding division by 2^e as
 * (h + 2^(e-1) - (h < 0)) >> e. */
typedef struct {
    int32_t bias;
    int32_t multiplier;
    int32_t shift; /* the general form's shift; the fast form's right shift e */
    int32_t nudge; /* the fast form's 2^(e-1) */
} tm_quant;

static inline int32_t tm_requantize_fast(int32_t acc, const tm_quant *q) {
    const int64_t product = ((int64_t)(acc + q->bias) * (int64_t)q->multiplier) +
                            INT64_C(1073741824);
    const int32_t high = (int32_t)(product >> 31);
    const uint32_t negative = (uint32_t)high >> 31u;
    const int32_t nudge = q->nudge - (int32_t)negative;
    return (high + nudge) >> (uint32_t)q->shift;
}
@ANY@"""

_REQUANTIZE_ANY = r"""
static inline int32_t tm_requantize_any(int32_t acc, const tm_quant *q) {
    return tm_requantize(acc + q->bias, q->multiplier, q->shift);
}
"""

_DECIDE = r"""
/* log sum_j exp(l_j - l_alert) over the other classes in scaled steps; `best` gets the
 * likelier other class (the first on ties). */
static int32_t tm_alert_total(const int16_t *logits, int32_t *best_class) {
    int32_t total = 0;
    int32_t best = -1;
    int32_t best_value = 0;
    for (int32_t j = 0; j < TAILORML_N_CLASSES; j++) {
        if (j != TAILORML_ALERT_CLASS) {
            const int32_t logit = logits[j];
            const int32_t gap = (logit - (int32_t)logits[TAILORML_ALERT_CLASS]) * TM_UNIT;
            if (best < 0) {
                total = gap;
            } else {
                const int32_t larger = (total > gap) ? total : gap;
                const int32_t below = total - gap;
                const int32_t above = gap - total;
                const int32_t distance = (total > gap) ? below : above;
                total = larger + tm_softplus(distance);
            }
            if ((best < 0) || (logit > best_value)) {
                best = j;
                best_value = logit;
            }
        }
    }
    *best_class = best;
    return total;
}

/* The alert policy on int16 logits: the alert class when the total stays within
 * log((1 - t) / t); else the likelier other class. */
static int32_t tm_decide(const int16_t *logits) {
    int32_t best = -1;
    const int32_t total = tm_alert_total(logits, &best);
    return (total <= tm_limit) ? TAILORML_ALERT_CLASS : best;
}
"""


def _source_body(model: QuantizedModel) -> str:
    """The model's C99 source without its banner."""
    _require_cgm_only(model)
    buffers = _buffers(model)
    parts = [
        f'#include "{HEADER_NAME}"\n#include <stddef.h>\n',
        "#if defined(__ARM_FEATURE_SIMD32)\n#include <arm_acle.h>\n#endif\n",
        _guards(model),
        f"#define TM_UNIT {2**DECISION_FRACTION_BITS}\n",
        "/* the decision's limit, log((1 - t) / t) in scaled steps (an object, not a macro: the\n"
        " * same expressions for every threshold, 0 included) */\n"
        f"static const int32_t tm_limit = {model.decision.limit};\n",
        f"#define TM_STEP {2**model.decision.step_bits}\n",
        f"#define TM_TABLE_SIZE {DECISION_TABLE_SIZE}\n",
        f"#define TM_LAST_LAYER tm_layer{len(model.layers) - 1}\n",
        "/* the CGM input: (reading - centre) requantized to int8 */\n",
        f"#define TM_INPUT_CENTRE ({int(model.input.centre[0])})\n",
        f"#define TM_INPUT_MULTIPLIER ({int(model.input.multiplier[0])})\n",
        f"#define TM_INPUT_SHIFT ({int(model.input.shift[0])})\n",
    ]
    functions, plain, general = [], False, False
    for index, layer in enumerate(model.layers):
        weights = _device_weights(model, index, buffers[index])
        tag = f"tm_l{index}"
        fast = _fast_requantization(layer, weights)
        general = general or not fast
        plain = plain or (
            layer.kind == "conv1d"
            and buffers[index].channels % 2 == 1
            and not _shifted_copy(layer, buffers[index])
        )
        tables = _words(f"{tag}_weight", _paired(weights)) + _quant_table(
            f"{tag}_quant", layer, fast
        )
        inside = "".join(f"    {line}\n" for line in tables.splitlines())
        functions.append(_layer_function(model, index, buffers, weights, fast, inside))
    # only what the layers call, so no build warns of an unused function
    guard = ("", "") if plain else ("#if !defined(__ARM_FEATURE_SIMD32)\n", "#endif\n")
    kernels = _KERNELS.replace("@PLAIN_OPEN@", guard[0]).replace("@PLAIN_CLOSE@", guard[1])
    parts.append(kernels.replace("@ANY@", _REQUANTIZE_ANY if general else ""))
    last = len(model.layers) - 1
    parts.append(
        "\n"
        + "\n".join(functions)
        + _softplus_function(model)
        + _DECIDE
        + "\n"
        + _features_function(
            model,
            "tm_run_features",
            "",
            "    static tailorml_work arena; /* tailorml_predict's, tailorml_features' */\n",
            "arena.slots",
        )
        + _features_function(
            model, "tm_run_features_in", ", tailorml_work *work", "", "work->slots"
        )
        + "void tailorml_features(const int16_t readings[TAILORML_WINDOW],\n"
        "                       int16_t features[TAILORML_FEATURES]) {\n"
        "    const int16_t *computed = tm_run_features(readings);\n"
        "    for (int32_t i = 0; i < TAILORML_FEATURES; i++) {\n"
        "        features[i] = computed[i];\n"
        "    }\n"
        "}\n\n"
        "int32_t tailorml_predict(const int16_t readings[TAILORML_WINDOW],\n"
        "                         int16_t logits[TAILORML_N_CLASSES]) {\n"
        "    int16_t own_logits[TAILORML_N_CLASSES];\n"
        "    int16_t *out = (logits != NULL) ? logits : own_logits;\n"
        f"    tm_layer{last}(tm_run_features(readings), out);\n"
        "    return tm_decide(out);\n"
        "}\n\n"
        "int32_t tailorml_head(const int16_t features[TAILORML_FEATURES],\n"
        "                      int16_t logits[TAILORML_N_CLASSES]) {\n"
        f"    tm_layer{last}(features, logits);\n"
        "    return tm_decide(logits);\n"
        "}\n\n"
        "int32_t tailorml_decide(const int16_t logits[TAILORML_N_CLASSES]) {\n"
        "    return tm_decide(logits);\n"
        "}\n" + _SAFE_CALL
    )
    return "\n".join(parts)


INT32_LIMIT = 2**31


def _fast_requantization(layer, weights: np.ndarray) -> bool:
    """Whether the few-instruction requantization (`tm_requantize_fast`) is exact for every
    channel of `layer` and every input: a right shift of at least 1 (or a zero multiplier,
    whose output is 0 either way), and no int32 overflow. The accumulator plus bias is
    bounded by |bias| + 255 sum |w| (inputs are int8 codes less an int8 zero point, so at
    most 255 from 0), the high product by that, and the rounding adds at most 2^(e-1)."""
    multiplier = layer.multiplier.astype(np.int64)
    shift = layer.shift.astype(np.int64)
    live = multiplier != 0
    if (shift[live] > -1).any():
        return False
    bound = np.abs(layer.bias.astype(np.int64)) + 255 * np.abs(weights.astype(np.int64)).sum(1)
    nudge = np.where(live, np.left_shift(1, np.maximum(-shift - 1, 0)), 1)
    return bool((bound + nudge + 2 < INT32_LIMIT).all())


def _quant_table(name: str, layer, fast: bool) -> str:
    """Per output channel: bias, multiplier, shift, nudge (`tm_quant`). The fast form takes
    the right shift e and 2^(e-1); a zero multiplier gets e = 1 (its output is 0)."""
    rows = []
    for bias, multiplier, shift in zip(layer.bias, layer.multiplier, layer.shift, strict=True):
        bias, multiplier, shift = int(bias), int(multiplier), int(shift)
        if fast:
            exponent = -shift if multiplier != 0 else 1
            rows.append(f"{{{bias}, {multiplier}, {exponent}, {1 << (exponent - 1)}}}")
        else:
            rows.append(f"{{{bias}, {multiplier}, {shift}, 0}}")
    body = ",\n    ".join(rows)
    return f"static const tm_quant {name}[{len(rows)}] = {{\n    {body}\n}};\n"


def _times(name: str, factor: int) -> str:
    """`name * factor` in C, without a `* 1` (MISRA 2.2: no operation without effect)."""
    return name if factor == 1 else f"{name} * {factor}"


def _row(pad: int, row: str, channels: int) -> str:
    """The index of output row `row` after `pad` padding rows, without a `0 +`."""
    return _times(row if pad == 0 else f"({pad} + {row})", channels)


def _layer_function(
    model: QuantizedModel,
    index: int,
    buffers: list[Buffer],
    weights: np.ndarray,
    fast: bool,
    tables: str,
) -> str:
    """The C function of one layer, its shape written into it as constants (so a compiler
    knows every trip count and offset): `tm_layer<index>(in, out)`. A linear layer takes its
    outputs in pairs of channels; a convolution pairs of rows (the two a max-pool of 2 joins)
    and pairs of channels, each pair of pairs one call of the 2x2 kernel, and zeroes the
    padding rows of the next buffer. Outputs are the int8 codes less their zero point (what
    the next layer reads), the last layer's the int16 logits."""
    layer, buffer = model.layers[index], buffers[index]
    last = index == len(model.layers) - 1
    next_pad = buffers[index + 1].pad if not last else 0
    out_ch, depth = weights.shape
    # the next layer reads the code less its zero point: clamp(v + z, min, max) - z is
    # clamp(v, min - z, max - z); the logits keep their zero point (0 for int16)
    zero = layer.output_zero_point
    low, high = layer.output_min - zero, layer.output_max - zero
    added = f" + {zero}" if last and zero != 0 else ""
    requantize = "tm_requantize_fast" if fast else "tm_requantize_any"
    stride = pair_stride(depth) // 4
    odd_channel = out_ch % 2 == 1
    # an odd last channel is paired with itself (MISRA 12.1: the operands of ?: named first)
    pick = (
        f"{{0}}const int32_t next = o + 1;\n{{0}}const int32_t o1 = (next < {out_ch}) ? next : o;\n"
        if odd_channel
        else "{0}const int32_t o1 = o + 1;\n"
    )
    tag = f"tm_l{index}"

    def output(target: str, acc: str, quant: str) -> str:
        return (
            f"{target} = (int16_t)(tm_clamp({requantize}({acc}, {quant}), {low}, {high}){added});"
        )

    head = f"/* {layer.name}: {layer.kind}, {out_ch} outputs */\n"
    if layer.kind == "linear" and next_pad == 0:
        return (
            head
            + f"static void tm_layer{index}(const int16_t *in, int16_t *out) {{\n"
            + tables
            + f"    const uint32_t *w = {tag}_weight;\n"
            f"    const tm_quant *q = {tag}_quant;\n"
            f"    for (int32_t o = 0; o < {out_ch}; o += 2) {{\n"
            f"{pick.format('        ')}"
            "        int32_t acc[2];\n"
            f"        tm_dot2(w, in, {depth}, acc);\n"
            f"        {output('out[o]', 'acc[0]', 'q')}\n"
            f"        {output('out[o1]', 'acc[1]', '&q[o1 - o]')}\n"
            f"        w = &w[{stride}];\n"
            "        q = &q[2];\n"
            "    }\n"
            "}\n"
        )
    in_ch = buffer.channels
    rows = buffer.rows if layer.kind == "conv1d" else 1
    pool = layer.pool
    out_rows = rows // pool
    used = 2 * out_rows if pool == 2 else rows
    shifted = _shifted_copy(layer, buffer)
    paired = in_ch % 2 == 0 or shifted
    if paired:
        kernel = (
            "#if defined(__ARM_FEATURE_SIMD32)\n"
            f"            tm_dot4_simd(w, x0, x1, {depth}, acc);\n"
            "#else\n"
            f"            tm_dot4_c(w, x0, x1, {depth}, acc);\n"
            "#endif\n"
        )
    else:  # odd channel counts: rows off a word, the plain kernel
        kernel = f"            tm_dot4_c(w, x0, x1, {depth}, acc);\n"
    lines = [head]
    lines.append(
        f"static void tm_layer{index}({'' if shifted else 'const '}int16_t *in, int16_t *out) {{\n"
    )
    lines.append(tables)
    if next_pad:
        lines.append(f"    tm_zero(out, {next_pad * out_ch});\n")
        lines.append(f"    tm_zero(&out[{(next_pad + out_rows) * out_ch}], {next_pad * out_ch});\n")
    if shifted:
        lines.append(
            f"    int16_t *shifted = &in[{_even(buffer.size)}]; /* in[j + 1] at j, on a word */\n"
            f"    for (int32_t j = 0; j < {buffer.size - 1}; j++) {{\n"
            "        shifted[j] = in[j + 1];\n"
            "    }\n"
        )
    if used % 2 == 1:
        row1 = f"((r + 1) < {rows}) ? (r + 1) : r"
        x1 = f"&in[{_times('r1', in_ch)}]" if not shifted else "(r1 > r) ? &shifted[r] : x0"
    else:
        row1 = "r + 1"
        x1 = f"&in[{_times('r1', in_ch)}]" if not shifted else "&shifted[r]"
    lines.append(f"    for (int32_t r = 0; r < {used}; r += 2) {{\n")
    if pool != 2 or not shifted:
        lines.append(f"        const int32_t r1 = {row1};\n")
    lines.append(f"        const int16_t *x0 = &in[{_times('r', in_ch)}];\n")
    lines.append(f"        const int16_t *x1 = {x1};\n")
    if pool == 2:
        lines.append(f"        int16_t *row0 = &out[{_row(next_pad, '(r / 2)', out_ch)}];\n")
    else:
        lines.append(f"        int16_t *row0 = &out[{_row(next_pad, 'r', out_ch)}];\n")
        lines.append(f"        int16_t *row1 = &out[{_row(next_pad, 'r1', out_ch)}];\n")
    lines.append(f"        const uint32_t *w = {tag}_weight;\n")
    lines.append(f"        const tm_quant *q = {tag}_quant;\n")
    lines.append(f"        for (int32_t o = 0; o < {out_ch}; o += 2) {{\n")
    lines.append(pick.format("            "))
    lines.append("            int32_t acc[4];\n")
    lines.append(kernel)
    if pool == 2:
        lines.append(
            "            /* requantization is non-decreasing in the accumulator (a\n"
            "             * non-negative multiplier, rounding shifts, a clamp), so the max of\n"
            "             * two requantized outputs is the requantized max: one\n"
            "             * requantization per pooled output */\n"
            "            const int32_t p0 = (acc[0] > acc[2]) ? acc[0] : acc[2];\n"
            "            const int32_t p1 = (acc[1] > acc[3]) ? acc[1] : acc[3];\n"
            f"            {output('row0[o]', 'p0', 'q')}\n"
            f"            {output('row0[o1]', 'p1', '&q[o1 - o]')}\n"
        )
    else:
        lines.append(
            f"            {output('row0[o]', 'acc[0]', 'q')}\n"
            f"            {output('row0[o1]', 'acc[1]', '&q[o1 - o]')}\n"
            f"            {output('row1[o]', 'acc[2]', 'q')}\n"
            f"            {output('row1[o1]', 'acc[3]', '&q[o1 - o]')}\n"
        )
    lines.append(f"            w = &w[{stride}];\n")
    lines.append("            q = &q[2];\n")
    lines.append("        }\n    }\n}\n")
    return "".join(lines)


def generate_c(model: QuantizedModel) -> str:
    """The model's C99 source (pair it with `generate_header`), its banner naming the
    model's fingerprint and the generator."""
    return f"{_banner(model_fingerprint(model))}\n{_source_body(model)}"


def _features_function(model: QuantizedModel, name: str, extra: str, arena: str, slots: str) -> str:
    """Every layer but the last on the arena `slots`; returns the last layer's input (the
    features). Written twice from this one text: on a static arena (tailorml_predict
    keeps the code and speed of constant addresses) and on the caller's work memory
    (tailorml_alert, reentrant). The model reads CGM alone (one channel)."""
    first, last = _buffers(model)[0], len(model.layers) - 1
    return (
        f"static const int16_t *{name}(const int16_t *readings{extra}) {{\n"
        f"{arena}"
        f"    int16_t *in = {slots}[0];\n"
        f"    tm_zero(in, {first.size});\n"
        "    for (int32_t t = 0; t < TAILORML_WINDOW; t++) {\n"
        "        const int32_t centred = (int32_t)readings[t] - TM_INPUT_CENTRE;\n"
        "        const int32_t q = tm_requantize(centred, TM_INPUT_MULTIPLIER, TM_INPUT_SHIFT);\n"
        f"        in[t + {first.pad}] = (int16_t)tm_clamp(q, -128, 127);\n"
        "    }\n"
        + "".join(
            f"    tm_layer{i}({slots}[{i % 2}], {slots}[{(i + 1) % 2}]);\n" for i in range(last)
        )
        + f"    return {slots}[{last % 2}];\n"
        "}\n\n"
    )


def _softplus_function(model: QuantizedModel) -> str:
    """log(1 + e^-gap) by its table (inside the one function that reads it)."""
    table = np.asarray(model.decision.softplus)
    if (np.diff(table) > 0).any():
        raise DeployError("the decision's softplus table must not increase")
    lines = _array("int32_t", "table", table).splitlines()
    body = "\n".join(f"    {line}" for line in lines)
    return f"""
/* log(1 + e^-gap) in scaled logit steps, linearly interpolated (gap >= 0; the table does
 * not increase, so the interpolated drop is >= 0 and a division by the step is its shift). */
static int32_t tm_softplus(int32_t gap) {{
{body}
    const int32_t index = gap / TM_STEP;
    int32_t value = 0;
    if (index < TM_TABLE_SIZE) {{
        const int32_t rest = gap - (index * TM_STEP);
        const int64_t low = table[index];
        const int64_t high = table[index + 1];
        const int64_t drop = (low - high) * (int64_t)rest;
        value = (int32_t)(low - (drop / TM_STEP));
    }}
    return value;
}}
"""


def model_fingerprint(model: QuantizedModel) -> str:
    """SHA-256 of the generated model code (everything but the banners): the same model
    gives the same fingerprint on any machine, any other gives another."""
    return hashlib.sha256(_source_body(model).encode()).hexdigest()


def _banner(fingerprint: str) -> str:
    return (
        f"/* tailorml int8 glucose-alert model: generated by tailorml {__version__}, do not "
        f"edit.\n * model sha256 {fingerprint} */"
    )


def _guards(model: QuantizedModel) -> str:
    """Refuse a header whose model constants differ from the ones this source was generated
    with (changing the threshold in the header would otherwise change nothing), and a
    big-endian core: the kernels read words by value (weights packed into uint32_t, int16
    pairs composed with shifts), so no byte order should enter, but no big-endian build is
    tested, so none is allowed."""
    policy = model.policy
    values = {
        "TAILORML_CHANNELS": model.channels,
        "TAILORML_WINDOW": model.window,
        "TAILORML_N_CLASSES": len(policy.classes),
        "TAILORML_ALERT_CLASS": policy.alert_index,
        "TAILORML_THRESHOLD_PPM": round(policy.threshold * 1_000_000),
        "TAILORML_ARENA_BYTES": arena_bytes(model),
        "TAILORML_ARENA_SLOT": arena_slot(model),
        "TAILORML_FEATURES": model.layers[-1].weight.shape[1],
        "TAILORML_FEATURE_ZERO_POINT": model.layers[-1].input_zero_point,
    }
    checks = "".join(
        f'#if {name} != {value}\n#error "{HEADER_NAME}: {name} is not the value this model '
        f'was generated with ({value}); export the model again instead of editing it"\n#endif\n'
        for name, value in values.items()
    )
    return (
        checks + "#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__)\n"
        "#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__\n"
        '#error "the int8 kernels are tested on little-endian cores only (every Cortex-M by '
        'default)"\n'
        "#endif\n#endif\n"
    )


_SAFE_CALL = r"""
int32_t tailorml_alert(const int16_t readings[TAILORML_WINDOW], tailorml_result *result,
                       tailorml_work *work) {
    int16_t clamped[TAILORML_WINDOW];
    int32_t missing = 0;
    for (int32_t i = 0; i < TAILORML_WINDOW; i++) {
        if (readings[i] == TAILORML_MISSING) {
            missing++;
            clamped[i] = TAILORML_SENSOR_MIN_MGDL; /* never read: the window is not decided */
        } else {
            clamped[i] = (int16_t)tm_clamp(readings[i], TAILORML_SENSOR_MIN_MGDL,
                                           TAILORML_SENSOR_MAX_MGDL);
        }
    }
    for (int32_t j = 0; j < TAILORML_N_CLASSES; j++) {
        result->logits[j] = 0;
    }
    result->margin = 0;
    /* the last reading is now, the one before it five minutes ago */
    const int32_t now_index = TAILORML_WINDOW - 1;
    const int32_t now = clamped[now_index];
    const int32_t before = clamped[now_index - 1];
    if ((readings[now_index] != TAILORML_MISSING) &&
        ((now <= TAILORML_URGENT_LOW_MGDL) ||
         ((now < TAILORML_URGENT_BELOW_MGDL) && (readings[now_index - 1] != TAILORML_MISSING) &&
          (now < before)))) {
        result->status = TAILORML_STATUS_URGENT_LOW;
        result->decided_class = TAILORML_ALERT_CLASS;
    } else if (missing > 0) {
        result->status = TAILORML_STATUS_NO_DECISION;
        result->decided_class = -1;
    } else {
        int32_t best = -1;
        TM_LAST_LAYER(tm_run_features_in(clamped, work), result->logits);
        const int32_t total = tm_alert_total(result->logits, &best);
        result->status = TAILORML_STATUS_DECIDED;
        result->decided_class = (total <= tm_limit) ? TAILORML_ALERT_CLASS : best;
        result->margin = tm_limit - total;
    }
    return result->status;
}
"""


def save_c(model: QuantizedModel, directory: str | Path) -> list[Path]:
    """Write the header and source into `directory` (atomically, each); their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header, source = generate_header(model), generate_c(model)
    return [
        atomic_write_text(directory / HEADER_NAME, header),
        atomic_write_text(directory / SOURCE_NAME, source),
    ]


def model_facts(model: SmallCNN, quantized: QuantizedModel) -> dict:
    """What an export states about its model: parameters, multiply-adds, weight and arena
    bytes, and per layer its shape and quantization."""
    return {
        "parameters": count_parameters(model),
        "macs": quantized.n_macs(),
        "weight_bytes": quantized.n_weight_bytes(),
        "arena_bytes": arena_bytes(quantized),
        "logit_scale": quantized.logit_scale,
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "outputs": int(layer.weight.shape[0]),
                "kernel": layer.kernel,
                "pool": layer.pool,
                "input_scale": layer.input_scale,
                "output_scale": layer.output_scale,
                "output_zero_point": layer.output_zero_point,
                "output_bits": layer.output_bits,
            }
            for layer in quantized.layers
        ],
        "input_scale_mgdl": [float(s) for s in quantized.input.scale],
        "input_centre_mgdl": [int(c) for c in quantized.input.centre],
    }


def example_model(seed: int = 0) -> QuantizedModel:
    """The default configuration's network with weights initialised from `seed`, quantized
    on seeded random CGM windows: the C of a real export (the same code; other weights),
    with no data and no training, for checks of the code itself (`make misra`)."""
    from tailorml.config import config_from_dict
    from tailorml.deploy.int8.quantize import quantize
    from tailorml.policy import AlertPolicy
    from tailorml.recipe import fresh_model

    config = config_from_dict({})
    policy = AlertPolicy.from_config(config, sample_minutes=5)  # the CGM grid
    window = config.task.window_minutes // policy.sample_minutes
    windows = np.random.default_rng(seed).uniform(40, 400, (256, 1, window)).astype(np.float32)
    model = fresh_model(config.model, windows, len(policy.classes), seed=seed)
    model.eval()
    model.policy = policy
    return quantize(model, windows)


if __name__ == "__main__":  # python -m tailorml.deploy.int8.c DIRECTORY: the example model's C
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tailorml.deploy.int8.c DIRECTORY")
    for written in save_c(example_model(), sys.argv[1]):
        print(written)
