/* Fast incremental WaveNet generation on the CPU: the per-sample loop of vqspeech.generate in C.
 *
 * One call generates `n` consecutive samples of one conditioning frame for B streams. Each layer
 * keeps a ring buffer of its past inputs ([size][B][R], size = (K-1)*d + 1); a new sample costs
 * one matrix-vector product per layer for the dilated taps and one for the residual/skip
 * projection, plus the output head. Weights are packed by fast_generate.py:
 *   W_dil [L][G][K*R]   tap j (0..K-1) multiplies the input at t - (K-1-j)*d
 *   W_out [L][R+S][G/2] residual rows first, then skip rows
 * Compiled at first use with the system C compiler; no Python or torch headers are needed.
 */
#include <math.h>
#include <string.h>

static void matvec(const float *W, const float *x, const float *bias, float *y, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const float *w = W + (long)i * cols;
        float acc = 0.0f;
#pragma omp simd reduction(+:acc)
        for (int j = 0; j < cols; j++) acc += w[j] * x[j];  /* vectorised: a reordered sum */
        y[i] = acc + (bias ? bias[i] : 0.0f);
    }
}

/* Returns 0, or -1 when a size exceeds the scratch space. */
int wavenet_generate(int B, int L, int R, int G, int S, int C, int K, const int *dilations,
                     float *buffers, const long *buf_offsets, long t0,
                     const float *W_dil, const float *b_dil, const float *W_out, const float *b_out,
                     const float *W_h1, const float *b_h1, const float *W_h2, const float *b_h2,
                     const float *emb, const float *cond, int n, const float *uniforms,
                     float temperature, int *current, int *out, float *logits_out) {
    enum { MAXC = 4096 };
    float x[MAXC], window[MAXC], h[MAXC], z[MAXC], o[MAXC], skip[MAXC], h1[MAXC], logits[MAXC];
    const int half = G / 2;
    if (K * R > MAXC || G > MAXC || R + S > MAXC || C > MAXC || S > MAXC) return -1;
    const float res_scale = sqrtf(0.5f), skip_scale = sqrtf(1.0f / (float)L);

    for (int s = 0; s < n; s++) {
        long t = t0 + s;
        for (int b = 0; b < B; b++) {
            memcpy(x, emb + (long)current[b] * R, sizeof(float) * R);
            memset(skip, 0, sizeof(float) * S);
            for (int l = 0; l < L; l++) {
                const int d = dilations[l];
                const long size = (long)(K - 1) * d + 1;
                float *ring = buffers + buf_offsets[l];
                memcpy(ring + ((t % size) * B + b) * R, x, sizeof(float) * R);
                for (int j = 0; j < K; j++) {
                    long col = ((t - (long)(K - 1 - j) * d) % size + size) % size;
                    memcpy(window + j * R, ring + (col * B + b) * R, sizeof(float) * R);
                }
                matvec(W_dil + (long)l * G * K * R, window, b_dil + (long)l * G, h, G, K * R);
                const float *c = cond + ((long)b * L + l) * G;
                for (int g = 0; g < half; g++) {
                    float a = h[g] + c[g], gate = h[g + half] + c[g + half];
                    z[g] = tanhf(a) / (1.0f + expf(-gate));
                }
                matvec(W_out + (long)l * (R + S) * half, z, b_out + (long)l * (R + S), o, R + S, half);
                for (int r = 0; r < R; r++) x[r] = (x[r] + o[r]) * res_scale;
                for (int k = 0; k < S; k++) skip[k] += o[R + k];
            }
            for (int k = 0; k < S; k++) skip[k] = fmaxf(skip[k] * skip_scale, 0.0f);
            matvec(W_h1, skip, b_h1, h1, S, S);
            for (int k = 0; k < S; k++) h1[k] = fmaxf(h1[k], 0.0f);
            matvec(W_h2, h1, b_h2, logits, C, S);
            if (logits_out) memcpy(logits_out + ((long)s * B + b) * C, logits, sizeof(float) * C);

            int pick = 0;
            float best = logits[0];
            for (int k = 1; k < C; k++) if (logits[k] > best) { best = logits[k]; pick = k; }
            if (temperature > 0.0f) {  /* inverse-CDF sampling from softmax(logits / temperature) */
                double total = 0.0;
                for (int k = 0; k < C; k++) { h[k] = expf((logits[k] - best) / temperature); total += h[k]; }
                double target = uniforms[(long)s * B + b] * total, acc = 0.0;
                pick = C - 1;
                for (int k = 0; k < C; k++) { acc += h[k]; if (acc > target) { pick = k; break; } }
            }
            current[b] = pick;
            out[(long)s * B + b] = pick;
        }
    }
    return 0;
}
