"""A small built-in training corpus for the tiny models' tokenizer.

Written for this project. It mixes the three kinds of text the suites send (English word problems, competition
math with LaTeX, Python code) so common pieces of each become single tokens. Changing this text changes the
tokenizer, and with it every stored run keyed on token ids: edit it only together with the model version.
"""

ENGLISH = """\
The release manager wants to know one thing: did switching the kernel change the model? A careful answer
needs a baseline, a comparison, and an honest estimate of the noise. We serve the same model twice, send the
same prompts to both servers, and compare what comes back. When the two runs agree to the last bit, the
change is safe. When they disagree, we look for the first token where the answers part ways.
Rotary position embeddings encode where each token sits in the sequence. The query and the key are rotated
by an angle that grows with the position, so the attention score depends only on the distance between them.
A bug that rotates the query and the key differently breaks this property, and the model starts to read the
context in the wrong order. Long documents suffer first, because the error grows with the position.
Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips
did Natalia sell altogether in April and May? Weng earns 12 dollars an hour for babysitting. Yesterday, she
just did 50 minutes of babysitting. How much did she earn? Betty is saving money for a new wallet which costs
100 dollars. Betty has only half of the money she needs. Her parents decided to give her 15 dollars for that
purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy the
wallet? James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?
A farmer has 17 sheep, and all but 9 run away. How many are left? The train leaves at 7:45 in the morning and
arrives at 11:20. How long is the trip in minutes? Think step by step, then give the final answer.
Let's think step by step. First, find how many items there are in total. Then subtract the ones that were
given away. Finally, divide the rest equally among the children. The answer is the number that remains.
She bought 3 notebooks for 4 dollars each and 2 pens for 1.50 dollars each, so she spent 12 + 3 = 15 dollars.
The store sold 120 apples on Monday, 25 percent more on Tuesday, and 40 fewer on Wednesday than on Tuesday.
The question asks for the total number of apples sold over the three days. The final answer is 410.
"""

MATH = """\
Problem: Find the number of ordered pairs of positive integers $(m, n)$ such that $m^2 n = 20^{20}$.
Solution: Since $20^{20} = 2^{40} \\cdot 5^{20}$, write $m = 2^a 5^b$ and $n = 2^c 5^d$. Then $2a + c = 40$
and $2b + d = 20$. There are $21$ choices for $a$ and $11$ choices for $b$, so the answer is $\\boxed{231}$.
Problem: Let $x$, $y$ and $z$ be real numbers with $x + y + z = 6$ and $xy + yz + zx = 11$. Find $x^2 + y^2
+ z^2$. Solution: We have $(x + y + z)^2 = x^2 + y^2 + z^2 + 2(xy + yz + zx)$, so $x^2 + y^2 + z^2 = 36 -
22 = 14$. The answer is $\\boxed{14}$.
Problem: The sum of the first $n$ odd numbers is $n^2$. Compute $\\sum_{k=1}^{100} (2k - 1)$.
Solution: By the formula, $\\sum_{k=1}^{100} (2k-1) = 100^2 = 10000$, so the answer is $\\boxed{10000}$.
Let $f(x) = \\frac{x^2 - 1}{x + 1}$ for $x \\neq -1$. Then $f(x) = x - 1$, and $f(2025) = 2024$.
The probability that two fair dice show a sum of $7$ is $\\frac{6}{36} = \\frac{1}{6}$.
If $a_1 = 3$ and $a_{n+1} = 2 a_n + 1$, then $a_n + 1 = 4 \\cdot 2^{n-1}$, so $a_{10} = 2^{11} - 1 = 2047$.
The remainder when $7^{100}$ is divided by $13$: since $7^{12} \\equiv 1 \\pmod{13}$, we get $7^{100}
\\equiv 7^{4} \\equiv 9 \\pmod{13}$. In triangle $ABC$, $AB = 13$, $BC = 14$ and $CA = 15$; its area is
$\\sqrt{21 \\cdot 8 \\cdot 7 \\cdot 6} = 84$. The answer is $\\boxed{84}$.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 64 75 90 100 128 256 512 1000 1024
1 + 1 = 2, 2 + 2 = 4, 3 * 4 = 12, 12 / 3 = 4, 10 - 7 = 3, 6 * 7 = 42, 9 * 9 = 81, 144 / 12 = 12, 2^10 = 1024.
#### 18
#### 72
#### 410
"""

CODE = '''\
def solve(n: int, values: list[int]) -> int:
    """Return the largest sum of a contiguous subarray."""
    best = values[0]
    current = 0
    for value in values:
        current = max(value, current + value)
        best = max(best, current)
    return best


def main() -> None:
    n = int(input())
    values = list(map(int, input().split()))
    print(solve(n, values))


if __name__ == "__main__":
    main()


class Solution:
    def twoSum(self, nums: list[int], target: int) -> list[int]:
        seen: dict[int, int] = {}
        for i, num in enumerate(nums):
            if target - num in seen:
                return [seen[target - num], i]
            seen[num] = i
        return []

    def isPalindrome(self, s: str) -> bool:
        cleaned = [c.lower() for c in s if c.isalnum()]
        return cleaned == cleaned[::-1]


import sys
from collections import defaultdict, deque


def read_graph() -> dict[int, list[int]]:
    data = sys.stdin.read().split()
    n, m = int(data[0]), int(data[1])
    graph = defaultdict(list)
    for k in range(m):
        a, b = int(data[2 + 2 * k]), int(data[3 + 2 * k])
        graph[a].append(b)
        graph[b].append(a)
    return graph


def bfs(graph: dict[int, list[int]], start: int) -> dict[int, int]:
    dist = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph[node]:
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                queue.append(nxt)
    return dist
'''

PROSE = """\
In the early spring the river rose above its banks, and the village moved its market to the hill behind the
church. Merchants carried baskets of bread, cheese, onions, and dried fish up the narrow road. Children ran
ahead to claim the best places under the old chestnut trees. By noon the square was crowded with farmers,
weavers, blacksmiths, and travelling musicians who played fiddles and small drums for a few coins.
Scientists measure temperature, pressure, and humidity every hour at weather stations across the country.
The data travel to a central office where computers combine them into forecasts for the next several days.
A forecast is never certain; it is a statement about probabilities, and good forecasters report how confident
they are. Rain tomorrow with probability seventy percent means that on many similar days, rain fell on about
seven out of ten of them.
Our library opens at nine o'clock on weekdays and at ten on Saturdays. Visitors may borrow up to eight books
for three weeks. Magazines, newspapers, maps, and rare manuscripts stay in the reading room. Please return
borrowed items to the desk near the entrance, and ask the staff if you need help finding a particular title.
The committee reviewed every proposal carefully. Some were ambitious but expensive; others were cheap but
unlikely to succeed. In the end they chose a modest plan: repair the bridge first, then widen the road, and
only afterwards consider building a new school. Everyone agreed the decision was reasonable, although several
members wished the budget had been larger.
Water boils at one hundred degrees Celsius at sea level, but at lower temperatures on high mountains, because
the air pressure is lower there. Light travels about three hundred thousand kilometres per second. The moon
orbits the earth roughly once every twenty-seven days, and the earth orbits the sun once a year.
Questions: Who wrote the letter? Where did they meet? Why was the meeting delayed? Which answer is correct?
Answers should be short, precise, and supported by evidence from the text. Explain your reasoning clearly.
"""

MORE_CODE = """\
import json
import math
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Point:
    x: float
    y: float

    def distance(self, other: "Point") -> float:
        return math.hypot(self.x - other.x, self.y - other.y)


@dataclass
class Inventory:
    items: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, count: int = 1) -> None:
        self.items[name] = self.items.get(name, 0) + count

    def remove(self, name: str, count: int = 1) -> bool:
        if self.items.get(name, 0) < count:
            return False
        self.items[name] -= count
        return True


def primes(limit: int) -> Iterator[int]:
    sieve = [True] * (limit + 1)
    for p in range(2, limit + 1):
        if sieve[p]:
            yield p
            for q in range(p * p, limit + 1, p):
                sieve[q] = False


def gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def binary_search(arr: list[int], key: int) -> int:
    lo, hi = 0, len(arr) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if arr[mid] == key:
            return mid
        elif arr[mid] < key:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


def load_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise RuntimeError(f"cannot read {path}: {error}") from error


for i in range(10):
    if i % 3 == 0 and i != 0:
        continue
    print(f"{i}: {i ** 2}", end=" ")
print(sorted({"b": 2, "a": 1}.items(), key=lambda kv: kv[1], reverse=True))
"""

# Common words, so frequent English pieces get their own tokens even in this short corpus.
WORDS = """\
about above across action activity actually address after again against age agent ago agree air allow
almost alone along already also although always among amount animal another answer anyone anything appear
apply approach area argue arm around arrive art article artist attention audience author available avoid
away baby back bad bag ball bank bar base beat beautiful because become bed before begin behavior behind
believe benefit best better between beyond big bill billion bit black blood blue board body book born both
box boy break bring brother budget build building business buy call camera campaign cancer candidate capital
car card care career carry case catch cause cell center central century certain certainly chair challenge
chance change character charge check child choice choose city civil claim class clear clearly close coach
cold collection college color come commercial common community company compare computer concern condition
conference congress consider consumer contain continue control cost could country couple course court cover
create crime cultural culture cup current customer cut dark daughter day dead deal death debate decade decide
deep defense degree democrat describe design despite detail determine develop development die difference
different difficult dinner direction director discover discuss disease doctor dog door down draw dream drive
drop drug during each early east easy eat economic economy edge education effect effort eight either election
else employee end energy enjoy enough enter entire environment especially establish even evening event ever
every everybody everyone everything exactly example executive exist expect experience expert explain eye face
fact factor fail fall family far fast father fear federal feel feeling few field fight figure fill film final
finally financial find fine finger finish fire firm first fish five floor fly focus follow food foot force
foreign forget form former forward four free friend front full fund future game garden gas general generation
get girl give glass goal good government great green ground group grow growth guess gun guy hair half hand
hang happen happy hard have head health hear heart heat heavy help here herself high himself history hit hold
home hope hospital hot hotel hour house however huge human hundred husband idea identify image imagine impact
important improve include including increase indeed indicate individual industry information inside instead
institution interest interesting international interview investment involve issue item itself job join just
keep key kid kill kind kitchen know knowledge land language large last late later laugh law lawyer lay lead
leader learn least leave left leg legal less letter level lie life light like likely line list listen little
live local long look lose loss lot love low machine magazine main maintain major majority make man manage
management manager many market marriage material matter maybe mean measure media medical meet member memory
mention message method middle might military million mind minute miss mission model modern moment money month
more morning most mother mouth move movement movie much music must myself name nation national natural nature
near nearly necessary need network never news newspaper next nice night none nor north note nothing notice
occur offer office officer official often oil okay old once only onto open operation opportunity option order
organization other others outside over own owner page pain painting paper parent part participant particular
partner party pass past patient pattern pay peace people perform performance perhaps period person personal
phone physical pick picture piece place plan plant play player point police policy political politics poor
popular population position positive possible power practice prepare present president pressure pretty
prevent price private probably process produce product production professional professor program project
property protect prove provide public pull purpose push put quality quickly quite race radio raise range
rate rather reach read ready real reality realize really reason receive recent recently recognize record red
reduce reflect region relate relationship religious remain remember report represent require research resource
respond response rest result return reveal rich right rise risk road rock role room rule run safe same save
scene school science score sea season seat second section security see seek seem sell send senior sense series
serious serve service set seven several shake share shoot short shot should shoulder show side sign similar
simple simply since sing single sister sit site situation six size skill skin small smile social society
soldier some somebody someone something sometimes son song soon sort sound source south southern space speak
special specific speech spend sport staff stage stand standard star start state statement station stay step
still stock stop store story strategy street strong structure student study stuff style subject success
successful such suddenly suffer suggest summer support sure surface system table take talk task tax teach
teacher team technology television tell ten tend term test than thank their them themselves then theory there
these they thing third those though thought thousand threat three through throughout throw thus today together
tonight too top total tough toward town trade traditional training travel treat treatment tree trial trip
trouble true truth try turn type under understand unit until upon usually value various very victim view
violence visit voice vote wait walk wall want war watch water way weapon wear week weight well west western
whatever when where whether which while white whole whom whose wide wife will win wind window wish with within
without woman wonder word work worker world worry would write writer wrong yard yeah year yes yet young
yourself
"""


CORPUS: tuple[str, ...] = (ENGLISH, PROSE, MATH, CODE, MORE_CODE, WORDS)
