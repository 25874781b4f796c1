"""The alternatives zingest is measured against, each a small script run as its own process.

``bare``        aiohttp that reads the body and answers 202 (the HTTP ceiling)
``naive``       aiohttp that INSERTs each request's rows before answering 200
``redisapi``    the original design's API: LPUSH the body onto a Redis list, answer 202 with a job id
``redisworker`` the original design's worker: BRPOP a job, INSERT its rows (run two of them)

Each prints nothing on success, listens on loopback only and stops on SIGTERM.
"""
