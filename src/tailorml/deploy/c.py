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
results are the integer reference's bit for bit (`tailorml.deploy.quantize`).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailorml import __version__
from tailorml.deploy.device_rules import MISSING, SENSOR_MAX_MGDL, SENSOR_MIN_MGDL
from tailorml.deploy.quantize import DECISION_FRACTION_BITS, DECISION_TABLE_SIZE, QuantizedModel
from tailorml.errors import DeployError
from tailorml.io import atomic_write_text

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


def arena_slot(model: QuantizedModel) -> int:
    """int16 values per arena slot: the largest layer input buffer, rounded up to an even
    count so that the second slot starts on a word as the first does."""
    largest = max(buffer.size for buffer in _buffers(model))
    return largest + largest % 2


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
int32_t tailorml_alert(const int16_t readings[TAILORML_CHANNELS * TAILORML_WINDOW],
                       tailorml_result *result, tailorml_work *work);

/* The model alone, without the rules of tailorml_alert (a TAILORML_MISSING reading is read
 * as a value): decide from `readings` (TAILORML_CHANNELS x TAILORML_WINDOW, channel-major).
 * Writes the int16 logits if `logits` is not NULL. Returns the class index. Not reentrant:
 * it uses one static arena. */
int32_t tailorml_predict(const int16_t readings[TAILORML_CHANNELS * TAILORML_WINDOW],
                         int16_t logits[TAILORML_N_CLASSES]);

/* The same computation up to the last layer: its TAILORML_FEATURES inputs (what on-device
 * learning of the last layer trains on). */
void tailorml_features(const int16_t readings[TAILORML_CHANNELS * TAILORML_WINDOW],
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
 * rounding), the same arithmetic as tailorml.deploy.fixed_point. For a multiplier >= 0 (all
 * of ours: QuantizeMultiplier gives [2^30, 2^31) or 0), gemmlowp's nudge-and-truncate high
 * multiply equals rounding half up, (a*b + 2^30) >> 31 (CMSIS-NN's
 * arm_nn_doubling_high_mult_no_sat), and its one saturating case cannot occur. */
static inline int32_t tm_high_mul(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

static inline int32_t tm_divide_pot(int32_t x, int32_t exponent) {
    const int32_t mask = (int32_t)((UINT32_C(1) << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t tm_requantize(int32_t x, int32_t multiplier, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return tm_divide_pot(tm_high_mul((int32_t)((uint32_t)x << left), multiplier), right);
}

static inline int32_t tm_clamp(int32_t x, int32_t low, int32_t high) {
    return x < low ? low : (x > high ? high : x);
}

/* Activations live in int16 slots holding q - z (the int8 code minus its zero point, as
 * CMSIS-NN's im2col buffers do), so padding is 0 and no offset is added in the inner loop.
 * Weights are int8, four to a uint32_t word (byte k is bits 8k to 8k + 7, by value: no byte
 * order enters, and every word is aligned), laid out as the kernels walk them (the
 * generator's `_paired`): output rows in pairs, the two outputs one call computes; per group
 * of four inputs the first row's word then the second's, each stored as w0 w2 w1 w3 so that
 * SXTB16 yields the pairs (w0, w1) and (w2, w3) that meet the int16 input pairs in SMLAD;
 * then the last depth % 4 weights of each row; a pair ends on a whole word. One pointer
 * walks a pair: what lets a compiler keep the four accumulators of tm_dot4 in registers.
 * tm_dot4 returns the four dot products of a pair of weight rows with two input rows,
 * tm_dot2 (a linear layer) those with one input row. */

/* The dot products stay functions of their own: inlined into the layer loop, clang runs
 * out of registers and keeps the accumulators on the stack (133,859 instructions per demo
 * inference as a call, 160,421 inlined). Only a hint: a compiler without it decides. */
#if defined(__GNUC__)
#define TM_NOINLINE __attribute__((noinline))
#else
#define TM_NOINLINE
#endif

/* The low byte of a word as a signed value (written so that compilers emit one SXTB or
 * SBFX: flipping the sign bit then subtracting it is sign extension, defined for all). */
static inline int32_t tm_s8(uint32_t word) {
    return ((int32_t)(word & 0xFFu) ^ 0x80) - 0x80;
}

/* Byte k of the words from w: the pair's last depth % 4 weights, first row then second. */
static inline int32_t tm_tail(const uint32_t *w, int32_t k) {
    return tm_s8(w[k / 4] >> (8u * (uint32_t)(k % 4)));
}

/* Plain C: the same pairs and 2x2 blocking, each weight word and input read once per four
 * products (input j of a group meets byte 0, 2, 1, 3 of the word: the SIMD order). */
static TM_NOINLINE void tm_dot4_c(const uint32_t *w, const int16_t *x0, const int16_t *x1,
                                  int32_t n, int32_t acc[4]) {
    static const uint32_t shift[4] = {0u, 16u, 8u, 24u};
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
    for (int32_t blocks = n / 4; blocks > 0; blocks--) {
        for (int32_t j = 0; j < 4; j++) {
            const int32_t u = tm_s8(w[0] >> shift[j]), v = tm_s8(w[1] >> shift[j]);
            const int32_t x = x0[j], y = x1[j];
            a00 += u * x;
            a01 += v * x;
            a10 += u * y;
            a11 += v * y;
        }
        w += 2;
        x0 += 4;
        x1 += 4;
    }
    const int32_t rest = n % 4;
    for (int32_t i = 0; i < rest; i++) {
        const int32_t u = tm_tail(w, i), v = tm_tail(w, rest + i);
        a00 += u * x0[i];
        a01 += v * x0[i];
        a10 += u * x1[i];
        a11 += v * x1[i];
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
}

#if defined(__ARM_FEATURE_SIMD32)
/* The Cortex-M4/M7/M33 path: the ACLE intrinsics of <arm_acle.h> (GCC, clang, armclang,
 * IAR), which a compiler for a core with the 32-bit SIMD instructions (__ARM_FEATURE_SIMD32)
 * provides. No inline assembly. Two int16 inputs are read as one word, written as halfword
 * reads (no pointer cast: no aliasing assumption) that compilers combine into one LDR: the
 * caller passes word-aligned inputs only (the arena is, and a layer whose input rows would
 * not all be, odd channel counts, takes the plain path). */
#if defined(__GNUC__)
#define TM_ASSUME_WORD(p) __builtin_assume_aligned((p), 4)
#else
#define TM_ASSUME_WORD(p) (p)
#endif

static inline int16x2_t tm_pair(const int16_t *p) {
    return (int16x2_t)((uint32_t)(uint16_t)p[0] | ((uint32_t)(uint16_t)p[1] << 16));
}

/* A rotation by 8 (bytes 1 and 3 to 0 and 2), folded into the SXTB16 that reads it. */
static inline uint32_t tm_ror8(uint32_t word) {
    return (word >> 8) | (word << 24);
}

static TM_NOINLINE void tm_dot4_simd(const uint32_t *w, const int16_t *x0, const int16_t *x1,
                                     int32_t n, int32_t acc[4]) {
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
    x0 = TM_ASSUME_WORD(x0);
    x1 = TM_ASSUME_WORD(x1);
    for (int32_t blocks = n / 4; blocks > 0; blocks--) {
        const uint32_t wa = w[0], wb = w[1];
        int16x2_t ta = __sxtb16((int8x4_t)wa), tb = __sxtb16((int8x4_t)wb);
        int16x2_t u = tm_pair(x0), v = tm_pair(x1);
        a00 = __smlad(ta, u, a00);
        a01 = __smlad(tb, u, a01);
        a10 = __smlad(ta, v, a10);
        a11 = __smlad(tb, v, a11);
        ta = __sxtb16((int8x4_t)tm_ror8(wa));
        tb = __sxtb16((int8x4_t)tm_ror8(wb));
        u = tm_pair(x0 + 2);
        v = tm_pair(x1 + 2);
        a00 = __smlad(ta, u, a00);
        a01 = __smlad(tb, u, a01);
        a10 = __smlad(ta, v, a10);
        a11 = __smlad(tb, v, a11);
        w += 2;
        x0 += 4;
        x1 += 4;
    }
    const int32_t rest = n % 4;
    for (int32_t i = 0; i < rest; i++) {
        const int32_t p = tm_tail(w, i), q = tm_tail(w, rest + i);
        a00 += p * x0[i];
        a01 += q * x0[i];
        a10 += p * x1[i];
        a11 += q * x1[i];
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
}

static TM_NOINLINE void tm_dot2(const uint32_t *w, const int16_t *x0, int32_t n,
                                int32_t acc[2]) {
    int32_t a0 = 0, a1 = 0;
    x0 = TM_ASSUME_WORD(x0);
    for (int32_t blocks = n / 4; blocks > 0; blocks--) {
        const uint32_t wa = w[0], wb = w[1];
        const int16x2_t u = tm_pair(x0), v = tm_pair(x0 + 2);
        a0 = __smlad(__sxtb16((int8x4_t)wa), u, a0);
        a1 = __smlad(__sxtb16((int8x4_t)wb), u, a1);
        a0 = __smlad(__sxtb16((int8x4_t)tm_ror8(wa)), v, a0);
        a1 = __smlad(__sxtb16((int8x4_t)tm_ror8(wb)), v, a1);
        w += 2;
        x0 += 4;
    }
    const int32_t rest = n % 4;
    for (int32_t i = 0; i < rest; i++) {
        a0 += tm_tail(w, i) * x0[i];
        a1 += tm_tail(w, rest + i) * x0[i];
    }
    acc[0] = a0, acc[1] = a1;
}
#else
/* Without the 32-bit SIMD instructions (Cortex-M0/M3, the host): plain C throughout. */
static void tm_dot2(const uint32_t *w, const int16_t *x0, int32_t n, int32_t acc[2]) {
    int32_t four[4];
    tm_dot4_c(w, x0, x0, n, four);
    acc[0] = four[0], acc[1] = four[1];
}
#endif

/* One int8 layer: `rows` output rows (before pooling) of `out_ch` channels; each output is
 * the dot product of a weight row with `depth` inputs starting at input row r. */
typedef struct {
    const uint32_t *weight;
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t in_ch, out_ch, depth;
    int32_t stride; /* words from one pair of weight rows to the next */
    int32_t paired; /* 1: every input row starts on a word, so inputs are read in pairs */
    int32_t rows, pool;
    int32_t out_zero_point, out_min, out_max;
    int32_t out_pad; /* padding rows of the next layer's buffer */
} tm_layer;

static inline void tm_dot4(const tm_layer *L, const uint32_t *w, const int16_t *x0,
                           const int16_t *x1, int32_t acc[4]) {
#if defined(__ARM_FEATURE_SIMD32)
    if (L->paired != 0) {
        tm_dot4_simd(w, x0, x1, L->depth, acc);
        return;
    }
#endif
    tm_dot4_c(w, x0, x1, L->depth, acc);
}

static void tm_zero(int16_t *buffer, int32_t count) {
    for (int32_t i = 0; i < count; i++) buffer[i] = 0;
}

static inline int32_t tm_output(const tm_layer *L, int32_t o, int32_t acc) {
    acc = tm_requantize(L->bias[o] + acc, L->multiplier[o], L->shift[o]) + L->out_zero_point;
    return tm_clamp(acc, L->out_min, L->out_max);
}

/* Rows are taken in pairs (the two rows a max-pool of 2 joins; an odd last row is paired
 * with itself) and channels in pairs (an odd last channel likewise). The next buffer gets
 * q - z with its padding rows zeroed. */
static void tm_run_layer(const tm_layer *L, const int16_t *in, int16_t *out) {
    const int32_t out_rows = L->rows / L->pool;
    tm_zero(out, L->out_pad * L->out_ch);
    tm_zero(out + (L->out_pad + out_rows) * L->out_ch, L->out_pad * L->out_ch);
    if (L->rows == 1 && L->out_pad == 0 && L->pool == 1) { /* one row (a linear layer) */
        const uint32_t *w = L->weight;
        for (int32_t o = 0; o < L->out_ch; o += 2) {
            const int32_t o1 = o + 1 < L->out_ch ? o + 1 : o;
            int32_t acc[2];
            tm_dot2(w, in, L->depth, acc);
            w += L->stride;
            const int32_t zero = L->out_zero_point;
            out[o] = (int16_t)(tm_output(L, o, acc[0]) - zero);
            out[o1] = (int16_t)(tm_output(L, o1, acc[1]) - zero);
        }
        return;
    }
    /* a max-pool of 2 drops an odd last row (as torch's floor mode does) */
    const int32_t used_rows = L->pool == 2 ? 2 * out_rows : L->rows;
    for (int32_t r = 0; r < used_rows; r += 2) {
        const int32_t r1 = r + 1 < L->rows ? r + 1 : r;
        const uint32_t *w = L->weight;
        for (int32_t o = 0; o < L->out_ch; o += 2) {
            const int32_t o1 = o + 1 < L->out_ch ? o + 1 : o;
            int32_t acc[4];
            tm_dot4(L, w, in + r * L->in_ch, in + r1 * L->in_ch, acc);
            w += L->stride;
            if (L->pool == 2) {
                /* requantization is non-decreasing in the accumulator (a non-negative
                 * multiplier, rounding shifts, a clamp), so the max of two requantized
                 * outputs is the requantized max: one requantization per pooled output */
                int16_t *row = out + (L->out_pad + r / 2) * L->out_ch;
                const int32_t p0 = acc[0] > acc[2] ? acc[0] : acc[2];
                const int32_t p1 = acc[1] > acc[3] ? acc[1] : acc[3];
                row[o] = (int16_t)(tm_output(L, o, p0) - L->out_zero_point);
                row[o1] = (int16_t)(tm_output(L, o1, p1) - L->out_zero_point);
            } else {
                const int32_t v00 = tm_output(L, o, acc[0]), v01 = tm_output(L, o1, acc[1]);
                const int32_t v10 = tm_output(L, o, acc[2]), v11 = tm_output(L, o1, acc[3]);
                int16_t *row0 = out + (L->out_pad + r) * L->out_ch;
                int16_t *row1 = out + (L->out_pad + r1) * L->out_ch;
                row0[o] = (int16_t)(v00 - L->out_zero_point);
                row0[o1] = (int16_t)(v01 - L->out_zero_point);
                row1[o] = (int16_t)(v10 - L->out_zero_point);
                row1[o1] = (int16_t)(v11 - L->out_zero_point);
            }
        }
    }
}

/* The last layer: int16 logits. */
static void tm_run_logits(const tm_layer *L, const int16_t *in, int16_t *logits) {
    const uint32_t *w = L->weight;
    for (int32_t o = 0; o < L->out_ch; o += 2) {
        const int32_t o1 = o + 1 < L->out_ch ? o + 1 : o;
        int32_t acc[2];
        tm_dot2(w, in, L->depth, acc);
        w += L->stride;
        logits[o] = (int16_t)tm_output(L, o, acc[0]);
        logits[o1] = (int16_t)tm_output(L, o1, acc[1]);
    }
}

/* log(1 + e^-gap) in scaled logit steps, linearly interpolated (gap >= 0). */
static int32_t tm_softplus(int32_t gap) {
    const int32_t index = gap >> TM_STEP_BITS;
    if (index >= TM_TABLE_SIZE) return 0;
    const int32_t rest = gap - (index << TM_STEP_BITS);
    const int32_t low = tm_softplus_table[index], high = tm_softplus_table[index + 1];
    return low - (int32_t)(((int64_t)(low - high) * rest) >> TM_STEP_BITS);
}

/* log sum_j exp(l_j - l_alert) over the other classes in scaled steps; `best` gets the
 * likelier other class (the first on ties). */
static int32_t tm_alert_total(const int16_t *logits, int32_t *best_class) {
    int32_t total = 0, best = -1, best_value = 0;
    for (int32_t j = 0; j < TAILORML_N_CLASSES; j++) {
        if (j == TAILORML_ALERT_CLASS) continue;
        const int32_t gap = ((int32_t)logits[j] - logits[TAILORML_ALERT_CLASS]) * TM_UNIT;
        if (best < 0) {
            total = gap;
        } else {
            const int32_t larger = total > gap ? total : gap;
            const int32_t distance = total > gap ? total - gap : gap - total;
            total = larger + tm_softplus(distance);
        }
        if (best < 0 || logits[j] > best_value) {
            best = j;
            best_value = logits[j];
        }
    }
    *best_class = best;
    return total;
}

/* The alert policy on int16 logits: the alert class when the total stays within
 * log((1 - t) / t); else the likelier other class. */
static int32_t tm_decide(const int16_t *logits) {
    int32_t best;
    const int32_t total = tm_alert_total(logits, &best);
    return total <= TM_LIMIT ? TAILORML_ALERT_CLASS : best;
}
"""


def _source_body(model: QuantizedModel) -> str:
    """The model's C99 source without its banner."""
    _require_cgm_only(model)
    buffers = _buffers(model)
    parts = [
        f'#include "{HEADER_NAME}"\n',
        "#if defined(__ARM_FEATURE_SIMD32)\n#include <arm_acle.h>\n#endif\n",
        _guards(model),
        f"#define TM_UNIT {2**DECISION_FRACTION_BITS}\n",
        f"#define TM_LIMIT ({model.decision.limit})\n",
        f"#define TM_STEP_BITS {model.decision.step_bits}\n",
        f"#define TM_TABLE_SIZE {DECISION_TABLE_SIZE}\n",
        f"#define TM_LAST_LAYER {len(model.layers) - 1}\n",
        _array("int32_t", "tm_softplus_table", model.decision.softplus),
        _array("int32_t", "tm_input_centre", model.input.centre),
        _array("int32_t", "tm_input_multiplier", model.input.multiplier),
        _array("int32_t", "tm_input_shift", model.input.shift),
    ]
    parts.append(_KERNELS)
    layer_structs = []
    for index, layer in enumerate(model.layers):
        weights = _device_weights(model, index, buffers[index])
        tag = f"tm_l{index}"
        parts += [
            f"/* {layer.name}: {layer.kind}, {weights.shape[0]} outputs */\n",
            _words(f"{tag}_weight", _paired(weights)),
            _array("int32_t", f"{tag}_bias", layer.bias),
            _array("int32_t", f"{tag}_multiplier", layer.multiplier),
            _array("int32_t", f"{tag}_shift", layer.shift),
        ]
        buffer = buffers[index]
        is_conv = layer.kind == "conv1d"
        paired = not is_conv or buffer.channels % 2 == 0  # every input row word-aligned
        next_pad = buffers[index + 1].pad if index + 1 < len(buffers) else 0
        layer_structs.append(
            f"    {{{tag}_weight, {tag}_bias, {tag}_multiplier, {tag}_shift, "
            f"{buffer.channels}, {weights.shape[0]}, {weights.shape[1]}, "
            f"{pair_stride(weights.shape[1]) // 4}, {int(paired)}, "
            f"{buffer.rows if is_conv else 1}, {layer.pool}, "
            f"{layer.output_zero_point}, {layer.output_min}, {layer.output_max}, {next_pad}}},"
        )
    last = len(model.layers) - 1
    parts.append(
        f"\nstatic const tm_layer tm_layers[{len(model.layers)}] = {{\n"
        + "\n".join(layer_structs)
        + "\n};\n\n"
        "static tailorml_work tm_arena; /* tailorml_predict's, tailorml_features' */\n\n"
        + _features_function(model, "tm_run_features", "", "tm_arena.slots")
        + _features_function(model, "tm_run_features_in", ", tailorml_work *work", "work->slots")
        + "void tailorml_features(const int16_t readings[TAILORML_CHANNELS * TAILORML_WINDOW],\n"
        "                       int16_t features[TAILORML_FEATURES]) {\n"
        "    const int16_t *computed = tm_run_features(readings);\n"
        "    for (int32_t i = 0; i < TAILORML_FEATURES; i++) features[i] = computed[i];\n"
        "}\n\n"
        "int32_t tailorml_predict(const int16_t readings[TAILORML_CHANNELS * TAILORML_WINDOW],\n"
        "                         int16_t logits[TAILORML_N_CLASSES]) {\n"
        "    int16_t own_logits[TAILORML_N_CLASSES];\n"
        "    int16_t *out = logits ? logits : own_logits;\n"
        f"    tm_run_logits(&tm_layers[{last}], tm_run_features(readings), out);\n"
        "    return tm_decide(out);\n"
        "}\n\n"
        "int32_t tailorml_head(const int16_t features[TAILORML_FEATURES],\n"
        "                      int16_t logits[TAILORML_N_CLASSES]) {\n"
        f"    tm_run_logits(&tm_layers[{last}], features, logits);\n"
        "    return tm_decide(logits);\n"
        "}\n\n"
        "int32_t tailorml_decide(const int16_t logits[TAILORML_N_CLASSES]) {\n"
        "    return tm_decide(logits);\n"
        "}\n" + _SAFE_CALL
    )
    return "\n".join(parts)


def generate_c(model: QuantizedModel) -> str:
    """The model's C99 source (pair it with `generate_header`), its banner naming the
    model's fingerprint and the generator."""
    return f"{_banner(model_fingerprint(model))}\n{_source_body(model)}"


def _features_function(model: QuantizedModel, name: str, extra: str, slots: str) -> str:
    """Every layer but the last on the arena `slots`; returns the last layer's input (the
    features). Written twice from this one text: on the static arena (tailorml_predict
    keeps the code and speed of constant addresses) and on the caller's work memory
    (tailorml_alert, reentrant)."""
    first, last = _buffers(model)[0], len(model.layers) - 1
    return (
        f"static const int16_t *{name}(const int16_t *readings{extra}) {{\n"
        f"    int16_t *in = {slots}[0];\n"
        f"    tm_zero(in, {first.size});\n"
        "    for (int32_t t = 0; t < TAILORML_WINDOW; t++) {\n"
        "        for (int32_t c = 0; c < TAILORML_CHANNELS; c++) {\n"
        "            const int32_t centred = (int32_t)readings[c * TAILORML_WINDOW + t]"
        " - tm_input_centre[c];\n"
        "            const int32_t q = tm_requantize(centred, tm_input_multiplier[c],"
        " tm_input_shift[c]);\n"
        f"            in[(t + {first.pad}) * TAILORML_CHANNELS + c] ="
        " (int16_t)tm_clamp(q, -128, 127);\n"
        "        }\n"
        "    }\n"
        f"    for (int32_t i = 0; i < {last}; i++) {{\n"
        f"        tm_run_layer(&tm_layers[i], {slots}[i % 2], {slots}[(i + 1) % 2]);\n"
        "    }\n"
        f"    return {slots}[{last % 2}];\n"
        "}\n\n"
    )


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
int32_t tailorml_alert(const int16_t readings[TAILORML_CHANNELS * TAILORML_WINDOW],
                       tailorml_result *result, tailorml_work *work) {
    int16_t clamped[TAILORML_CHANNELS * TAILORML_WINDOW];
    int32_t missing = 0;
    for (int32_t i = 0; i < TAILORML_CHANNELS * TAILORML_WINDOW; i++) {
        if (readings[i] == TAILORML_MISSING) {
            missing++;
            clamped[i] = TAILORML_SENSOR_MIN_MGDL; /* never read: the window is not decided */
        } else {
            clamped[i] = (int16_t)tm_clamp(readings[i], TAILORML_SENSOR_MIN_MGDL,
                                           TAILORML_SENSOR_MAX_MGDL);
        }
    }
    for (int32_t j = 0; j < TAILORML_N_CLASSES; j++) result->logits[j] = 0;
    result->margin = 0;
    /* channel 0 is CGM: its last reading is now, the one before it five minutes ago */
    const int32_t now_index = TAILORML_WINDOW - 1;
    const int32_t now = clamped[now_index], before = clamped[now_index - 1];
    if (readings[now_index] != TAILORML_MISSING &&
        (now <= TAILORML_URGENT_LOW_MGDL ||
         (now < TAILORML_URGENT_BELOW_MGDL && readings[now_index - 1] != TAILORML_MISSING &&
          now < before))) {
        result->status = TAILORML_STATUS_URGENT_LOW;
        result->decided_class = TAILORML_ALERT_CLASS;
        return result->status;
    }
    if (missing > 0) {
        result->status = TAILORML_STATUS_NO_DECISION;
        result->decided_class = -1;
        return result->status;
    }
    int32_t best;
    tm_run_logits(&tm_layers[TM_LAST_LAYER], tm_run_features_in(clamped, work), result->logits);
    const int32_t total = tm_alert_total(result->logits, &best);
    result->status = TAILORML_STATUS_DECIDED;
    result->decided_class = total <= TM_LIMIT ? TAILORML_ALERT_CLASS : best;
    result->margin = TM_LIMIT - total;
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
