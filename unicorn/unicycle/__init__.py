"""UniCycle (method.md section 6): text -> image -> text. The model draws an image for each prompt, answers
questions about it from the image alone, and a judge scores the answers: Soft and Hard per prompt (scoring.py).

    schema.py        our JSONL instance schema and loader          scoring.py    s_q, Soft, Hard, summaries
    judges.py        rule / model / OpenAI-compatible judges      clients.py    engine and HTTP text models
    runner.py        draw, answer, judge; resumable               store.py      append-only resume records
    tiif.py          TIIF-Bench's files, extra no / mc items      toyworld_set.py  the toy world's test split
    report.py        report.json, report.md, scores.png           cli.py        `unicorn unicycle run|score`
"""
