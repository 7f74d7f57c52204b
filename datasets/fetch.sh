#!/usr/bin/env bash
# Download the original datasets into DIR (default ../shared/datasets) in the layout tokenrec
# reads. Needs internet, curl and unzip. Check the licences in datasets/README.md first.
set -euo pipefail
dir=${1:-../shared/datasets}
tr_raw=https://raw.githubusercontent.com/Quhaoh233/TokenRec/main/data
mkdir -p "$dir"/lastfm/raw "$dir"/ml-1m/raw "$dir"/beauty/tokenrec "$dir"/clothing/tokenrec
cd "$dir"
echo "LastFM (HetRec 2011)"
curl -fL -o lastfm/raw/hetrec2011-lastfm-2k.zip \
  https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip
unzip -o -q lastfm/raw/hetrec2011-lastfm-2k.zip -d lastfm/raw/hetrec2011-lastfm-2k
echo "MovieLens-1M"
curl -fL -o ml-1m/raw/ml-1m.zip https://files.grouplens.org/datasets/movielens/ml-1m.zip
unzip -o -q -j ml-1m/raw/ml-1m.zip 'ml-1m/ratings.dat' 'ml-1m/movies.dat' 'ml-1m/users.dat' \
  'ml-1m/README' -d ml-1m/raw
echo "Amazon Beauty and Clothing (TokenRec's processed sequences)"
curl -fL -o beauty/tokenrec/user_sequence.txt "$tr_raw/Beauty/user_sequence.txt"
curl -fL -o clothing/tokenrec/user_sequence.txt "$tr_raw/Clothing/user_sequence.txt"
echo "done: tokenrec ingest --dataset lastfm --data-dir $dir"
