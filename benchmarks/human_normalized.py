"""Human-normalised Atari scores, to set a run's eval.json beside the paper's Table 1.

    python benchmarks/human_normalized.py runs/*/eval.json

    normalised = (score - random) / (human - random)    (100% = the human tester, 0% = random play)

The reference scores are the no-op-starts ones (random play and the professional human
tester, as tabulated with DQN and its successors), matching how our evaluation starts
episodes (up to 30 random no-ops). The paper's Table 1 uses human starts, whose reference
scores differ and are not public for every game: compare with care (docs/results.md).
Games: six of the paper's Table S3 (Pong, Breakout, BeamRider, Q*bert, Seaquest, SpaceInvaders).
"""

import json
import re
import sys

RANDOM_AND_HUMAN = {
    "BeamRider": (363.9, 16926.5),
    "Breakout": (1.7, 30.5),
    "Pong": (-20.7, 14.6),
    "Qbert": (163.9, 13455.0),
    "Seaquest": (68.4, 42054.7),
    "SpaceInvaders": (148.0, 1668.7),
}


def game_of(env_id):
    """'PongNoFrameskip-v4', 'ALE/Pong-v5', 'Pong-v4' -> 'Pong'."""
    match = re.fullmatch(r"(?:ALE/)?([A-Za-z]+?)(?:NoFrameskip|Deterministic)?-v\d+", env_id)
    if not match:
        raise ValueError(f"{env_id!r} is not an Atari id like PongNoFrameskip-v4 or ALE/Pong-v5")
    return match.group(1)


def human_normalized(env_id, score):
    """The score as a fraction of the way from random play (0.0) to the human tester (1.0)."""
    game = game_of(env_id)
    if game not in RANDOM_AND_HUMAN:
        raise ValueError(f"no reference scores for {game}; known: {', '.join(RANDOM_AND_HUMAN)}")
    random, human = RANDOM_AND_HUMAN[game]
    return (score - random) / (human - random)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        with open(path) as f:
            result = json.load(f)
        try:
            print(f"{path}: {result['env_id']} mean {result['mean']:.1f} over {len(result['returns'])} episodes "
                  f"= {human_normalized(result['env_id'], result['mean']):.1%} human-normalised")
        except ValueError as error:
            print(f"{path}: {error}", file=sys.stderr)
