def tt(q):
  z = 0
  for w in range(1,11):
        print(q,'x',w,'=',q*w)
        z+=q*w
  return z
q=int(input('?'))
print('sum',tt(q))
