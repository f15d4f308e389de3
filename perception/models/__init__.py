"""perception.models"""
