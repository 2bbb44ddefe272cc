#!/usr/bin/env python3
"""Minimise a benchmark function with a simple metaheuristic.

A small, self-contained (standard library only) optimisation program used as
the workload of the example sweep. Progress goes to stderr; the last line of
stdout is one JSON object with the result, e.g.

    {"fopt": 0.0123, "iter": 200, "evaluations": 4020, "algorithm": "de", ...}
"""

import argparse
import json
import math
import random
import sys


# --- benchmark functions (global minimum 0 at the origin) --------------------

def sphere(x):
    return sum(v * v for v in x)


def rastrigin(x):
    return 10.0 * len(x) + sum(v * v - 10.0 * math.cos(2.0 * math.pi * v) for v in x)


FUNCTIONS = {"sphere": sphere, "rastrigin": rastrigin}


class Problem:
    """Objective with box bounds [-b, b]^dim and an evaluation counter."""

    def __init__(self, func, dim, bound):
        self.func, self.dim, self.bound = func, dim, bound
        self.evaluations = 0

    def __call__(self, x):
        self.evaluations += 1
        return self.func(x)

    def clip(self, x):
        return [min(self.bound, max(-self.bound, v)) for v in x]

    def random_point(self, rng):
        return [rng.uniform(-self.bound, self.bound) for _ in range(self.dim)]


class Progress:
    """Prints `iteration i/N best=...` to stderr about every 10% of the run."""

    def __init__(self, total):
        self.total = total
        self.step = max(1, total // 10)

    def __call__(self, i, best):
        if i % self.step == 0 or i == self.total:
            print(f"iteration {i}/{self.total} best={best:.6g}", file=sys.stderr, flush=True)


# --- algorithms: each returns (best_x, best_f) -------------------------------

def random_search(p, rng, iterations, pop, progress):
    best_x, best_f = None, math.inf
    for i in range(1, iterations + 1):
        for _ in range(pop):
            x = p.random_point(rng)
            f = p(x)
            if f < best_f:
                best_x, best_f = x, f
        progress(i, best_f)
    return best_x, best_f


def pso(p, rng, iterations, pop, progress, w=0.72, c1=1.49, c2=1.49):
    # Clamp velocities to half the search range so particles cannot fly off.
    vmax = p.bound
    xs = [p.random_point(rng) for _ in range(pop)]
    vs = [[rng.uniform(-vmax, vmax) * 0.1 for _ in range(p.dim)] for _ in range(pop)]
    pbest = [list(x) for x in xs]
    pbest_f = [p(x) for x in xs]
    g = min(range(pop), key=pbest_f.__getitem__)
    gbest, gbest_f = list(pbest[g]), pbest_f[g]
    for i in range(1, iterations + 1):
        for k in range(pop):
            x, v = xs[k], vs[k]
            for d in range(p.dim):
                v[d] = (w * v[d]
                        + c1 * rng.random() * (pbest[k][d] - x[d])
                        + c2 * rng.random() * (gbest[d] - x[d]))
                v[d] = min(vmax, max(-vmax, v[d]))
            xs[k] = x = p.clip([x[d] + v[d] for d in range(p.dim)])
            f = p(x)
            if f < pbest_f[k]:
                pbest[k], pbest_f[k] = list(x), f
                if f < gbest_f:
                    gbest, gbest_f = list(x), f
        progress(i, gbest_f)
    return gbest, gbest_f


def differential_evolution(p, rng, iterations, pop, progress, F=0.5, CR=0.9):
    # DE/rand/1/bin: mutant = a + F*(b - c), binomial crossover with the target.
    xs = [p.random_point(rng) for _ in range(pop)]
    fs = [p(x) for x in xs]
    for i in range(1, iterations + 1):
        for k in range(pop):
            a, b, c = rng.sample([j for j in range(pop) if j != k], 3)
            forced = rng.randrange(p.dim)  # at least one gene from the mutant
            trial = [xs[a][d] + F * (xs[b][d] - xs[c][d])
                     if d == forced or rng.random() < CR else xs[k][d]
                     for d in range(p.dim)]
            trial = p.clip(trial)
            f = p(trial)
            if f <= fs[k]:
                xs[k], fs[k] = trial, f
        progress(i, min(fs))
    k = min(range(pop), key=fs.__getitem__)
    return xs[k], fs[k]


def genetic_algorithm(p, rng, iterations, pop, progress,
                      tournament=3, alpha=0.5, mutation_rate=None, elite=2):
    # Real-coded GA: tournament selection, BLX-alpha crossover, gaussian
    # mutation (sigma = 10% of the range) and the best `elite` kept unchanged.
    if mutation_rate is None:
        mutation_rate = 1.0 / p.dim
    sigma = 0.1 * 2 * p.bound
    xs = [p.random_point(rng) for _ in range(pop)]
    fs = [p(x) for x in xs]

    def select():
        k = min(rng.sample(range(pop), tournament), key=fs.__getitem__)
        return xs[k]

    for i in range(1, iterations + 1):
        order = sorted(range(pop), key=fs.__getitem__)
        new_xs = [xs[k] for k in order[:elite]]
        new_fs = [fs[k] for k in order[:elite]]
        while len(new_xs) < pop:
            a, b = select(), select()
            child = []
            for d in range(p.dim):
                lo, hi = min(a[d], b[d]), max(a[d], b[d])
                span = hi - lo
                gene = rng.uniform(lo - alpha * span, hi + alpha * span)
                if rng.random() < mutation_rate:
                    gene += rng.gauss(0.0, sigma)
                child.append(gene)
            child = p.clip(child)
            new_xs.append(child)
            new_fs.append(p(child))
        xs, fs = new_xs, new_fs
        progress(i, min(fs))
    k = min(range(pop), key=fs.__getitem__)
    return xs[k], fs[k]


ALGORITHMS = {
    "random": random_search,
    "pso": pso,
    "de": differential_evolution,
    "ga": genetic_algorithm,
}


# --- command line -------------------------------------------------------------

def positive(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}")
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Minimise a benchmark function with a simple metaheuristic. "
                    "Progress is printed to stderr; the last line of stdout is a "
                    "JSON object with fopt, iter, evaluations, the settings and "
                    "the best point x.")
    parser.add_argument("--algorithm", required=True, choices=list(ALGORITHMS),
                        help="random search, particle swarm, differential "
                             "evolution or genetic algorithm")
    parser.add_argument("--function", required=True, choices=list(FUNCTIONS),
                        help="benchmark function to minimise (minimum 0 at the origin)")
    parser.add_argument("--dimension", required=True, type=positive(1), metavar="N",
                        help="number of variables (>= 1)")
    parser.add_argument("--iterations", required=True, type=positive(1), metavar="N",
                        help="iterations/generations; random search draws "
                             "iterations x population points (>= 1)")
    parser.add_argument("--population", default=20, type=positive(4), metavar="N",
                        help="population / swarm size (>= 4, default 20)")
    parser.add_argument("--seed", default=0, type=int, metavar="S",
                        help="random seed; equal seeds give equal results (default 0)")
    parser.add_argument("--bounds", default=5.12, type=positive_float, metavar="B",
                        help="search box is [-B, B] in every dimension (default 5.12)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    problem = Problem(FUNCTIONS[args.function], args.dimension, args.bounds)
    algorithm = ALGORITHMS[args.algorithm]
    best_x, best_f = algorithm(problem, rng, args.iterations, args.population,
                               Progress(args.iterations))
    result = {
        "fopt": best_f,
        "iter": args.iterations,
        "evaluations": problem.evaluations,
        "algorithm": args.algorithm,
        "function": args.function,
        "dimension": args.dimension,
        "seed": args.seed,
        "x": [round(v, 6) + 0.0 for v in best_x],  # + 0.0 turns -0.0 into 0.0
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
