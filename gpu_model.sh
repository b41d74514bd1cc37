set -x
cat $HOME/parts/part* | tar -C $HOME/parts -xf - && pip install -q --no-index --no-deps --no-compile --target $HOME/site $HOME/parts/*.whl 2>&1 | tail -2
ln -sfn $PWD/export python/fftconv_rt/export
export PYTHONPATH=$HOME/site:$PWD/python FFTCONV_RT_LIB_DIR=$PWD/build-gpu/lib
python -m pytest -q -m ort_cuda tests/test_ort_cuda.py 2>&1 | tail -3
python -m fftconv_rt.cli bench --model --out $OUT/model.jsonl 2>&1 | grep -v Warning | tail -12
python scripts/ort_model_profile.py 8192 32768 2>&1 | grep -v Warning | tail -60 > $OUT/profile18.txt
python scripts/ort_model_profile.py 8192 --opset 20 2>&1 | grep -v Warning | tail -40 > $OUT/profile20.txt
head -c 6000 $OUT/profile18.txt; grep -i "optimised\|node time\|model_run\|Gelu" $OUT/profile20.txt
