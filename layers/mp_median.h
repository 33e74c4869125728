/* The median of a handful of timings: what every measurement of mpipe reports (the benchmarks,
 * the calibration, a run's steps beside its plan), so one spell of a noisy machine moves none of
 * them. One definition, so the figures a plan is made from and the figures a run is set beside
 * are the same statistic. */
#ifndef MP_MEDIAN_H
#define MP_MEDIAN_H

#include <stddef.h>

/* Sorts v[0..n) in place and returns its median (the mean of the middle two for even n); 0 for
 * n = 0. */
double mp_median(double *v, size_t n);

#endif
