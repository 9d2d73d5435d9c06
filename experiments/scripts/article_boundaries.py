"""Could the article boundaries of a CoNLL-2003 copy without -DOCSTART- rows (the Hub's) be guessed? Measured on a
raw file that has them: how often the classic tell, a dateline ("BRUSSELS 1996-08-22") as an article's second
sentence, marks a boundary, and how often it fires elsewhere.

    python experiments/scripts/article_boundaries.py ../shared/conll2003/eng.train
"""

import re
import sys

from conll_crf.conll import read_conll_file

# a place in capitals (optionally ", REGION"), then the date: the dateline under a Reuters headline
DATELINE = re.compile(r"^[A-Z][A-Za-z .'/&-]*( ,.*)? \d{4}-\d{2}-\d{2}$")


def main(path: str) -> None:
    articles, _, _ = read_conll_file(path)
    found = missed = elsewhere = 0
    for article in articles:
        for i, sentence in enumerate(article.sentences):
            dateline = bool(DATELINE.match(" ".join(sentence.words)))
            if i == 1:
                found += dateline
                missed += not dateline
            elif dateline:
                elsewhere += 1
    print(f"{path}: {len(articles)} articles; a dateline as the second sentence in {found}, not in {missed};")
    print(f"  dateline-like sentences elsewhere (false boundaries): {elsewhere}")


if __name__ == "__main__":
    main(sys.argv[1])
