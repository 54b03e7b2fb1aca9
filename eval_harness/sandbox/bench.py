"""Judging throughput benchmark: known-correct solutions (written for this project) to easy LCB v5
problems, judged through the bounded sandbox pool. Prints solutions per second; asserts nothing.

    python -m eval_harness.sandbox.bench [--data-dir DIR] [--repeat 5] [--workers 1 2]

The same solutions back tests/test_sandbox_lcb.py.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from .judge import Job, Limits, TestCase, detect, judge_many

# AtCoder (stdin) solutions.
STDIN_SOLUTIONS: dict[str, str] = {
    "abc365_a": "y = int(input())\nprint(366 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 365)\n",
    "abc365_b": "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(sorted(a)[-2]) + 1)\n",
    "abc366_a": (
        "n, t, a = map(int, input().split())\nr = n - t - a\n"
        "print('Yes' if t > a + r or a > t + r else 'No')\n"
    ),
    "abc366_b": (
        "n = int(input())\ns = [input() for _ in range(n)]\nm = max(map(len, s))\n"
        "for j in range(m):\n"
        "    t = ''.join(s[i][j] if j < len(s[i]) else '*' for i in range(n - 1, -1, -1))\n"
        "    print(t.rstrip('*'))\n"
    ),
    "abc367_a": (
        "a, b, c = map(int, input().split())\n"
        "asleep = (b < a < c) if b < c else (a > b or a < c)\nprint('No' if asleep else 'Yes')\n"
    ),
    "abc367_b": "x = input().strip()\nif '.' in x:\n    x = x.rstrip('0').rstrip('.')\nprint(x)\n",
    "abc368_a": (
        "n, k = map(int, input().split())\na = input().split()\nprint(' '.join(a[n - k:] + a[:n - k]))\n"
    ),
    "abc368_b": (
        "import sys\ndata = sys.stdin.read().split()\na = list(map(int, data[1:]))\nc = 0\n"
        "while sum(1 for x in a if x > 0) > 1:\n"
        "    a.sort(reverse=True)\n    a[0] -= 1\n    a[1] -= 1\n    c += 1\nprint(c)\n"
    ),
    "abc369_a": (
        "a, b = map(int, input().split())\ns = {2 * a - b, 2 * b - a}\n"
        "if (a + b) % 2 == 0:\n    s.add((a + b) // 2)\nprint(len(s))\n"
    ),
    "abc369_b": (
        "def main():\n    n = int(input())\n    pos, f = {}, 0\n    for _ in range(n):\n"
        "        a, s = input().split()\n        a = int(a)\n        if s in pos:\n"
        "            f += abs(a - pos[s])\n        pos[s] = a\n    print(f)\n\n"
        "if __name__ == '__main__':\n    main()\n"
    ),
    "abc370_a": (
        "l, r = map(int, input().split())\n"
        "print('Yes' if (l, r) == (1, 0) else 'No' if (l, r) == (0, 1) else 'Invalid')\n"
    ),
    "abc370_b": (
        "n = int(input())\nA = [None] + [[None] + list(map(int, input().split())) for _ in range(n)]\n"
        "cur = 1\nfor j in range(1, n + 1):\n    cur = A[cur][j] if cur >= j else A[j][cur]\nprint(cur)\n"
    ),
    "abc371_a": (
        "ab, ac, bc = input().split()\nolder = {'A': 0, 'B': 0, 'C': 0}\n"
        "older['B' if ab == '<' else 'A'] += 1\nolder['C' if ac == '<' else 'A'] += 1\n"
        "older['C' if bc == '<' else 'B'] += 1\nprint(next(k for k, v in older.items() if v == 1))\n"
    ),
    "abc371_b": (
        "n, m = map(int, input().split())\nseen = set()\nfor _ in range(m):\n    a, b = input().split()\n"
        "    if b == 'M' and a not in seen:\n        seen.add(a)\n        print('Yes')\n"
        "    else:\n        print('No')\n"
    ),
}

# LeetCode (functional) solutions. `List`, `Counter`, `defaultdict` come from LCB's prelude.
FUNCTIONAL_SOLUTIONS: dict[str, str] = {
    "3533": (
        "class Solution:\n    def finalPositionOfSnake(self, n: int, commands: List[str]) -> int:\n"
        "        i = j = 0\n        for c in commands:\n"
        "            if c == 'UP':\n                i -= 1\n"
        "            elif c == 'DOWN':\n                i += 1\n"
        "            elif c == 'LEFT':\n                j -= 1\n            else:\n                j += 1\n"
        "        return i * n + j\n"
    ),
    "3519": (
        "class Solution:\n    def winningPlayerCount(self, n: int, pick: List[List[int]]) -> int:\n"
        "        cnt = defaultdict(int)\n        for x, y in pick:\n            cnt[(x, y)] += 1\n"
        "        return len({x for (x, _), c in cnt.items() if c > x})\n"
    ),
    "3543": (
        "class Solution:\n    def countKConstraintSubstrings(self, s: str, k: int) -> int:\n"
        "        r = 0\n        for i in range(len(s)):\n            z = o = 0\n"
        "            for j in range(i, len(s)):\n"
        "                if s[j] == '0':\n                    z += 1\n"
        "                else:\n                    o += 1\n                if z <= k or o <= k:\n"
        "                    r += 1\n        return r\n"
    ),
    "3555": (
        "class Solution:\n"
        "    def getFinalState(self, nums: List[int], k: int, multiplier: int) -> List[int]:\n"
        "        nums = list(nums)\n        for _ in range(k):\n            i = nums.index(min(nums))\n"
        "            nums[i] *= multiplier\n        return nums\n"
    ),
    "3553": (
        "class Solution:\n    def checkTwoChessboards(self, coordinate1: str, coordinate2: str) -> bool:\n"
        "        f = lambda c: (ord(c[0]) - ord('a') + int(c[1])) % 2\n"
        "        return f(coordinate1) == f(coordinate2)\n"
    ),
    "3567": (
        "class Solution:\n    def convertDateToBinary(self, date: str) -> str:\n"
        "        return '-'.join(bin(int(p))[2:] for p in date.split('-'))\n"
    ),
    "3568": (
        "class Solution:\n    def generateKey(self, num1: int, num2: int, num3: int) -> int:\n"
        "        a, b, c = (str(x).zfill(4) for x in (num1, num2, num3))\n"
        "        return int(''.join(min(a[i], b[i], c[i]) for i in range(4)))\n"
    ),
    "3600": (
        "class Solution:\n    def kthCharacter(self, k: int) -> str:\n        w = [0]\n"
        "        while len(w) < k:\n            w += [(x + 1) % 26 for x in w]\n"
        "        return chr(ord('a') + w[k - 1])\n"
    ),
    "3606": (
        "class Solution:\n    def minElement(self, nums: List[int]) -> int:\n"
        "        return min(sum(map(int, str(x))) for x in nums)\n"
    ),
    "3610": (
        "class Solution:\n    def findXSum(self, nums: List[int], k: int, x: int) -> List[int]:\n"
        "        res = []\n        for i in range(len(nums) - k + 1):\n"
        "            c = Counter(nums[i:i + k])\n"
        "            top = sorted(c.items(), key=lambda t: (-t[1], -t[0]))[:x]\n"
        "            res.append(sum(v * f for v, f in top))\n        return res\n"
    ),
    "3636": (
        "class Solution:\n    def isBalanced(self, num: str) -> bool:\n"
        "        return sum(int(c) for c in num[::2]) == sum(int(c) for c in num[1::2])\n"
    ),
    "3612": (
        "class Solution:\n    def hasIncreasingSubarrays(self, nums: List[int], k: int) -> bool:\n"
        "        inc = lambda a: all(a[i] < a[i + 1] for i in range(len(a) - 1))\n"
        "        return any(inc(nums[a:a + k]) and inc(nums[a + k:a + 2 * k])\n"
        "                   for a in range(len(nums) - 2 * k + 1))\n"
    ),
    "3616": (
        "class Solution:\n    def countValidSelections(self, nums: List[int]) -> int:\n"
        "        n, cnt = len(nums), 0\n        for s in range(n):\n            if nums[s] != 0:\n"
        "                continue\n            for d in (-1, 1):\n                a, cur = list(nums), s\n"
        "                while 0 <= cur < n:\n"
        "                    if a[cur] == 0:\n                        cur += d\n"
        "                    else:\n                        a[cur] -= 1\n                        d = -d\n"
        "                        cur += d\n                if not any(a):\n                    cnt += 1\n"
        "        return cnt\n"
    ),
    "3644": (
        "class Solution:\n    def minimumSumSubarray(self, nums: List[int], l: int, r: int) -> int:\n"
        "        best = None\n        for i in range(len(nums)):\n            s = 0\n"
        "            for j in range(i, len(nums)):\n                s += nums[j]\n"
        "                if l <= j - i + 1 <= r and s > 0 and (best is None or s < best):\n"
        "                    best = s\n        return -1 if best is None else best\n"
    ),
}

LCB_FILE = "livecodebench/lcb_v5_2408_2502_public.jsonl"


def load_problems(data_dir: Path) -> dict[str, dict]:
    with open(data_dir / LCB_FILE) as f:
        return {r["question_id"]: r for r in map(json.loads, f)}


def job_for(problem: dict, code: str) -> Job:
    tests = tuple(TestCase(t["input"], t["output"]) for t in json.loads(problem["public_test_cases"]))
    meta = json.loads(problem["metadata"])
    if meta.get("func_name"):
        return Job(code=code, tests=tests, mode="functional", func_name=meta["func_name"])
    return Job(code=code, tests=tests)


def known_jobs(data_dir: Path) -> list[tuple[str, Job]]:
    problems = load_problems(data_dir)
    sols = {**STDIN_SOLUTIONS, **FUNCTIONAL_SOLUTIONS}
    return [(qid, job_for(problems[qid], code)) for qid, code in sols.items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ROPE_EVAL_DATA", "../shared/data")))
    ap.add_argument("--repeat", type=int, default=5, help="copies of the workload per measurement")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = ap.parse_args(argv)
    jobs = [j for _, j in known_jobs(args.data_dir)] * args.repeat
    n_tests = sum(len(j.tests) for j in jobs)
    iso = detect()
    print(f"sandbox: {iso.describe()}")
    print(f"workload: {len(jobs)} solutions, {n_tests} tests, cpus={os.cpu_count()}")
    judge_many(jobs[:4], Limits(timeout_s=6), workers=1)  # warm the page cache
    for w in args.workers:
        t0 = time.perf_counter()
        results = judge_many(jobs, Limits(timeout_s=6), workers=w)
        dt = time.perf_counter() - t0
        ok = sum(r.status == "pass" for r in results)
        print(
            f"workers={w}: {len(jobs) / dt:7.1f} solutions/s  {n_tests / dt:7.1f} tests/s  "
            f"({dt:.2f} s, {ok}/{len(jobs)} passed)"
        )


if __name__ == "__main__":
    main()
