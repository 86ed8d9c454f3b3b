def f():
 x=int(input())
 y=1
 while y<10:
  print(x*y)
 y=y+1
f
