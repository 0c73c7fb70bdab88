"""The colorization Turing test: prepare a survey, sample trials, store votes, compute fool rates.

    python -m demo.survey prepare --photos my-photos/ --out survey/ --model default --temperature 0.2 0.38 1.0
    python app.py --survey survey/                       # participants take the test in the browser
    python -m demo.survey results --survey survey/ --csv votes.csv

Modules: ``prepare`` (images and manifest), ``sampling`` (pairs, trials, sides),
``storage`` (votes in SQLite/PostgreSQL), ``session`` (one participant's run),
``stats`` (fool rates, Wilson intervals), ``ui`` (the Gradio tab).
"""
