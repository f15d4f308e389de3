"""perception.postprocess"""
